"""Inputs and results of the remote checks: the cheap `ls-remote` sweep between full syncs.

`CheckRemotes` runs one long `check_remotes` activity per shard of repositories. It
asks each remote what the watched ref is every poll interval and signals
`SyncRepository.remote_moved` only when a sync has something to do: the ref moved,
the check failed (the sync's own retries and the breaker decide), or an app is
behind. Ids, commits and counts only.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class CheckReason(StrEnum):
    """Why a remote check woke a repository's workflow."""

    MOVED = "moved"  # the remote's ref names another commit than the last snapshot
    FAILED = "failed"  # the check itself failed: the sync (with retries) decides
    BEHIND = "behind"  # an app has not acknowledged the last snapshot yet


@dataclass
class RemoteMoved:
    """The `remote_moved` signal: sync now (ignored while the breaker is open or paused)."""

    reason: CheckReason
    detail: str = ""  # the new object id, or a redacted one-line error
    checked_at: datetime | None = None
    # `moved`: the ids the ref names on the remote now (its commit; a tag's object too).
    # The loop syncs only when it has none of them, and after a running sync only when
    # that sync got none of them (older senders leave it empty: then it always syncs).
    commits: list[str] = field(default_factory=list)


@dataclass
class CheckRemotesInput:
    """One shard's sweep, for `run_seconds` before the workflow continues-as-new."""

    shard: int = 0
    shards: int = 1
    run_seconds: float = 3600.0
    concurrency: int = 32  # checks in flight at once


@dataclass
class CheckProgress:
    """The sweep's heartbeat: counts since the activity started, and the last full pass."""

    repositories: int = 0
    checks: int = 0
    signalled: int = 0
    failed: int = 0
    # When every repository of the shard had last been checked (None: not yet).
    swept_at: datetime | None = None


@dataclass
class CheckRemotesResult:
    """What one activity run did."""

    checks: int
    signalled: int
    failed: int


def check_workflow_id(shard: int, shards: int) -> str:
    """The id of one shard's `CheckRemotes` workflow."""
    return f"treecast-check-remotes-{shard}-of-{shards}"


def shard_of(repository_id: str, shards: int) -> int:
    """The shard a repository's checks run in (a stable hash of its id)."""
    import zlib

    return zlib.crc32(repository_id.encode()) % shards
