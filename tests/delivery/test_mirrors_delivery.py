"""The delivery side of verifiable mirrors: the `sync_completed` event with its tree digest,
and a reset of the app's ledger (reconcile, redeliver) that a finishing run must not undo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import treecast.delivery.files as files
from examples.receiver import Receiver
from models.tables import App
from tests.delivery.test_delivery import Run
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.digest import git_blob_id, tree_digest
from treecast.store import watches
from treecast.store.ledger import forget_ledger


@pytest.fixture
def run(settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str) -> Run:
    return Run(settings, tmp_path, receiver, [receiver_secret])


def opt_in(run: Run) -> None:
    with session_scope(run.settings.database_url) as session:
        app = session.get(App, run.app_id)
        assert app is not None
        app.sync_completed = True
        session.add(app)


def test_a_ledger_reset_while_a_run_finishes_is_not_undone(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redeliver (or reconcile) landing after a run's last acknowledgement, before it
    records the commit as delivered: the watch must stay without a delivered commit, or the
    next sync believes the app is at that commit and sends nothing."""
    run.repo.write("a.txt", "a\n")
    commit = run.repo.commit("one")
    run.register()
    finish = watches.finish_delivery

    def reset_first(*args: Any, **kwargs: Any) -> Any:
        forget_ledger(run.settings, run.app_id, run.repository_id)  # another process, meanwhile
        return finish(*args, **kwargs)

    monkeypatch.setattr(files, "finish_delivery", reset_first)
    run.deliver(commit)
    assert run.watch().delivered_commit is None
    monkeypatch.setattr(files, "finish_delivery", finish)
    run.deliver(commit)  # the next run sends everything again, as the reset asked
    assert run.watch().delivered_commit == commit
    assert [r.path for r in run.receiver.file_requests()] == ["a.txt", "a.txt"]


def test_sync_completed_carries_the_digest_of_what_the_app_holds(run: Run) -> None:
    run.repo.write("b/x.txt", "x\n")
    run.repo.write("a.txt", "a\n")
    run.repo.write("é.txt", "accent\n")
    commit = run.repo.commit("three")
    run.register()
    run.deliver(commit)
    assert [r for r in run.receiver.requests if r.event == "sync_completed"] == []  # not asked
    opt_in(run)
    run.repo.write("a.txt", "A\n")
    second = run.repo.commit("change a")
    run.deliver(second)
    completed = [r for r in run.receiver.requests if r.event == "sync_completed"]
    assert len(completed) == 1
    event = completed[0].payload
    mirror = run.receiver.files()
    assert event["commit_sha"] == second and event["files"] == 3
    assert event["object_format"] == "sha1"
    assert event["tree_digest"] == tree_digest((p, git_blob_id(d)) for p, d in mirror.items())
    assert [a.event for a in run.attempts()][-1] == "sync_completed"
