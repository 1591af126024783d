"""Inputs, results and error types of the git activities (no file content here)."""

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Self


class GitErrorType(StrEnum):
    """`ApplicationError.type` values raised by the git activities."""

    REPOSITORY_NOT_FOUND = "RepositoryNotFound"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    REF_NOT_FOUND = "RefNotFound"
    TIMEOUT = "GitTimeout"
    NETWORK = "GitNetworkError"
    OTHER = "GitError"
    TREE_TOO_LARGE = "TreeTooLarge"  # past a tree limit: refused, not retried
    UNSAFE_CONTENT = "UnsafeRepositoryContent"  # objects git's fsck refuses (e.g. a .git path)
    URL_REFUSED = "GitUrlRefused"  # the URL's host resolves to a refused address now
    HOST_KEY_MISMATCH = "HostKeyMismatch"  # the ssh server's host key is not the pinned one


# Retrying cannot help with these: the remote said no.
NON_RETRYABLE_GIT_ERRORS: tuple[GitErrorType, ...] = (
    GitErrorType.REPOSITORY_NOT_FOUND,
    GitErrorType.AUTHENTICATION_FAILED,
    GitErrorType.REF_NOT_FOUND,
    GitErrorType.TREE_TOO_LARGE,
    GitErrorType.UNSAFE_CONTENT,
    GitErrorType.URL_REFUSED,
    GitErrorType.HOST_KEY_MISMATCH,
)


@dataclass
class SnapshotStats:
    """The counts of one commit's tree (after `.treecastignore`), as stored and reported."""

    file_count: int = 0
    total_bytes: int = 0
    skipped_symlinks: int = 0
    skipped_submodules: int = 0
    skipped_invalid_paths: int = 0
    skipped_unsafe_paths: int = 0  # `..`, `.git`, absolute...: never delivered

    def counts(self) -> dict[str, Any]:
        """The counts by field name (to build a row or a result from them)."""
        return {f.name: getattr(self, f.name) for f in fields(SnapshotStats)}

    @classmethod
    def of(cls, row: Any) -> Self:
        """The counts of anything that has them as attributes (a `Snapshot` row)."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(SnapshotStats)})


@dataclass
class SnapshotInput:
    """Fetch the repository's ref into this worker's cache and record the commit."""

    repository_id: str


@dataclass(kw_only=True)
class SnapshotResult(SnapshotStats):
    """Small metadata about the synced commit; file lists stay in git."""

    repository_id: str
    commit: str | None  # None: the remote has no commits yet (a successful, empty sync)
    ref: str  # the ref actually synced (the default branch's name when none was set)
    # Apps whose own access the git host just refused: each gets one `sync_failed`, and
    # nothing more is delivered to them (docs/security.md, "Tenants").
    refused_app_ids: list[str] = field(default_factory=list)
