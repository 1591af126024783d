"""Rows read as Core turned into model objects to read, without the ORM's loading (the
hot path's reads: a tenth of the CPU of a session's loads; docs/performance.md)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Row
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel

Model = TypeVar("Model", bound=SQLModel)


def detached(model: type[Model], row: Row[Any]) -> Model:
    """`row` as a `model` object not in any session: read it, never change or add it."""
    # Its attributes read through the ORM's instrumentation, set up on the ORM's first use:
    # a worker's first sync may read before any (a no-op after).
    configure_mappers()
    return model.model_construct(**row._mapping)  # type: ignore[return-value]
