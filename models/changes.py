"""One file change for one app, as computed against that app's ledger."""

from dataclasses import dataclass
from enum import StrEnum


class ChangeKind(StrEnum):
    """Kinds of change, in the order they are delivered (deletes, creates, updates).

    Each is also the webhook event that carries it and its endpoint under the app's
    base URL.
    """

    DELETE = "delete"
    CREATE = "create"
    UPDATE = "update"


@dataclass(frozen=True)
class FileChange:
    """A change to deliver: paths and blob ids only; bytes are read from git when sending."""

    kind: ChangeKind
    path: str
    blob_id: str | None  # the current git blob (None for delete)
    size: int  # the current size in bytes (0 for delete)
    previous_sha256: str | None  # the ledger's SHA-256 (update and delete)
