"""Idle repositories straight into the database: one app watching each, synced at one commit.

For the remote-check tests and `bench.idle_checks`, which need many repositories whose
sweep finds nothing to do, without registering and syncing each one.
"""

from __future__ import annotations

from models.tables import App, Repository, Snapshot, Watch, WatchStatus
from treecast.config import Settings
from treecast.db import session_scope


def add_idle_repositories(
    settings: Settings, urls: list[str], commit: str, interval: int, prefix: str = "repo-"
) -> list[str]:
    """Rows for one repository per URL (ids `{prefix}000000`...), each with a snapshot at
    `commit` and a watch of the app `app1` that acknowledged it; returns the ids."""
    ids = [f"{prefix}{n:06d}" for n in range(len(urls))]
    with session_scope(settings.database_url) as session:
        if session.get(App, "app1") is None:
            session.add(
                App(id="app1", name="a", base_url="http://127.0.0.1:1", secrets_encrypted="x")
            )
        for rid, url in zip(ids, urls, strict=True):
            session.add(Repository(id=rid, url=url, poll_interval_seconds=interval))
        session.flush()
        for rid in ids:
            session.add(Snapshot(repository_id=rid, commit=commit))
            session.add(
                Watch(
                    app_id="app1",
                    repository_id=rid,
                    status=WatchStatus.SYNCED,
                    delivered_commit=commit,
                )
            )
    return ids
