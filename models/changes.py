"""One file change for one app, as computed against that app's ledger."""

from __future__ import annotations

from dataclasses import dataclass


class ChangeKind:
    """Kinds of change, in the order they are delivered."""

    DELETE = "delete"
    CREATE = "create"
    UPDATE = "update"

    ORDER = (DELETE, CREATE, UPDATE)


@dataclass(frozen=True)
class FileChange:
    """A change to deliver: paths and blob ids only; bytes are read from git when sending."""

    kind: str  # a ChangeKind value
    path: str
    blob_id: str | None  # the current git blob (None for delete)
    size: int  # the current size in bytes (0 for delete)
    previous_sha256: str | None  # the ledger's SHA-256 (update and delete)
