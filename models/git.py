"""Inputs, results and error types of the git activities (no file content here)."""

from __future__ import annotations

from dataclasses import dataclass


class GitErrorType:
    """`ApplicationError.type` values raised by the git activities.

    The first three are non-retryable: retrying cannot help.
    """

    REPOSITORY_NOT_FOUND = "RepositoryNotFound"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    REF_NOT_FOUND = "RefNotFound"
    TIMEOUT = "GitTimeout"
    NETWORK = "GitNetworkError"
    OTHER = "GitError"

    NON_RETRYABLE = (REPOSITORY_NOT_FOUND, AUTHENTICATION_FAILED, REF_NOT_FOUND)


@dataclass
class SnapshotInput:
    """Fetch the repository's ref into this worker's cache and record the commit."""

    repository_id: str


@dataclass
class SnapshotResult:
    """Small metadata about the synced commit; file lists stay in git."""

    repository_id: str
    commit: str | None  # None: the remote has no commits yet (a successful, empty sync)
    ref: str  # the ref actually synced (the default branch's name when none was set)
    file_count: int = 0
    total_bytes: int = 0
    skipped_symlinks: int = 0
    skipped_submodules: int = 0
    skipped_invalid_paths: int = 0
