"""The push hooks' replay guard: each delivery id acted on is a row, so the same delivery
sent to two API processes (or again, within RETENTION) starts one sync."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from models.tables import PushDelivery, utcnow
from treecast.db import session_scope

# Git hosts retry a failed delivery within hours, and GitHub lets a person redeliver one
# for three days: a repeat within that long starts nothing.
RETENTION = timedelta(days=3)


def _key(host: str, delivery_id: str) -> str:
    return hashlib.sha256(f"{host}:{delivery_id}".encode()).hexdigest()


def claim(database_url: str, host: str, delivery_id: str, now: datetime | None = None) -> bool:
    """Record a delivery before acting on it; False when it was recorded already (by any
    process). Rows older than RETENTION go in the same transaction."""
    now = now or utcnow()
    try:
        with session_scope(database_url) as session:
            session.execute(
                delete(PushDelivery).where(col(PushDelivery.received_at) < now - RETENTION)
            )
            session.add(PushDelivery(key=_key(host, delivery_id), received_at=now))
    except IntegrityError:
        return False
    return True


def release(database_url: str, host: str, delivery_id: str) -> None:
    """Forget a claimed delivery whose sync could not be started, so a retry of it may."""
    with session_scope(database_url) as session:
        session.execute(
            delete(PushDelivery).where(col(PushDelivery.key) == _key(host, delivery_id))
        )
