"""The push hooks' replay guard: each delivery id acted on is a row, so the same delivery
sent to two API processes (or again, within RETENTION) starts one sync."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col

from models.tables import PushDelivery, utcnow

# Git hosts retry a failed delivery within hours, and GitHub lets a person redeliver one
# for three days: a repeat within that long starts nothing.
RETENTION = timedelta(days=3)


def _key(host: str, delivery_id: str) -> str:
    return hashlib.sha256(f"{host}:{delivery_id}".encode()).hexdigest()


def claim(session: Session, host: str, delivery_id: str, now: datetime | None = None) -> None:
    """Record a delivery before acting on it; `IntegrityError` (at once) when it was
    recorded already, by any process. Rows older than RETENTION go too."""
    now = now or utcnow()
    session.execute(delete(PushDelivery).where(col(PushDelivery.received_at) < now - RETENTION))
    session.add(PushDelivery(key=_key(host, delivery_id), received_at=now))
    session.flush()


def release(session: Session, host: str, delivery_id: str) -> None:
    """Forget a claimed delivery whose sync could not be started, so a retry of it may."""
    session.execute(delete(PushDelivery).where(col(PushDelivery.key) == _key(host, delivery_id)))
