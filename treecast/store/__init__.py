"""Treecast's one data layer: every query and write, one module per kind of row.

The service layer and the activities call it; front doors never come here directly.
"""

from __future__ import annotations

from sqlmodel import Session


def discard(session: Session) -> None:
    """Undo what the caller's transaction wrote so far (a dry run)."""
    session.rollback()
    session.expunge_all()
