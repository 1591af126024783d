"""Recorded workflow histories must replay on today's workflow code.

The histories in tests/histories/ come from the workflow tests. A change that
makes the workflows non-deterministic (reordered commands, a new activity in the
middle of old code, a changed timer) fails here instead of in production. To
record them again after a deliberate, versioned change:

    TREECAST_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_sync_workflow.py \
        tests/workflows/test_deliver_workflow.py tests/workflows/test_notify_workflow.py \
        tests/workflows/test_bulk_workflow.py -k '...'

Pick the tests with -k: deliver_failures, deliver_newer_commit and deliver_orphaned
were recorded before apps took turns and are the only cover of that unpatched path;
recording them again would replace them with the patched one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.support.temporal_env import HISTORIES
from worker import workflows as all_workflows

pytestmark = pytest.mark.timeout(60)

EXPECTED = {
    "SyncRepository": {
        "sync_breaker",
        "sync_signals",
        "sync_can_first_run",
        "sync_remote_checks",
        "sync_access_refused",  # an app's own access refused: its notice child, patched
        "sync_wakes_for_commits",  # a wake for the commit it has, or is syncing
        "sync_new_watch_reuses",  # a new watch handed the commit just synced
        # a pass report in the task of its handover (signal, start), patched
        "sync_report_with_signal",
        "sync_report_with_start",
    },
    "CheckRemotes": {"check_remotes"},
    # deliver_failures, _newer_commit and _orphaned predate "apps take turns" (the
    # unpatched path); the others take turns, with a failing app.
    "DeliverFiles": {
        "deliver_failures",
        "deliver_newer_commit",
        "deliver_orphaned",
        "deliver_retry_after",
        "deliver_cut_short",
        "deliver_chunk_resume",
    },
    "NotifyBreaker": {"notify_dead_app", "notify_access_refused"},
    "BulkWatches": {"bulk_watches"},
}


def _histories() -> list[Path]:
    return sorted(HISTORIES.rglob("*.json"))


def test_every_workflow_has_recorded_histories() -> None:
    names = {path.stem for path in _histories()}
    for workflow, wanted in EXPECTED.items():
        assert wanted <= names, f"{workflow}: missing {sorted(wanted - names)}"


@pytest.mark.skipif(
    os.environ.get("TREECAST_RECORD_HISTORIES") == "1",
    reason="the histories are being recorded by this very run",
)
@pytest.mark.parametrize("path", _histories(), ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=all_workflows()).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
