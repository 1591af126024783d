"""The request bookkeeping of `sync --wait` and the API, without a server (workflows/requests.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.delivery import AppDelivery, DeliveryStatus
from models.sync import DeliveryPass, RequestState, SyncState
from workflows import requests

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def delivered(app_id: str, created: int, *, failed: bool = False) -> AppDelivery:
    status = DeliveryStatus.FAILED if failed else DeliveryStatus.SYNCED
    return AppDelivery(app_id, status, created=created, error_type="X" if failed else None)


def a_pass(
    commit: str, at: datetime, *apps: AppDelivery, ids: tuple[str, ...] = ()
) -> DeliveryPass:
    return DeliveryPass("repo", commit, list(ids), list(apps), finished_at=at)


def test_a_quiet_sync_is_unchanged() -> None:
    state = SyncState()
    requests.accept(state, "r1", T0, None)
    requests.start(state, ["r1"])
    requests.synced(state, ["r1"], "c1", T0, handed_over=False)
    outcome = requests.find(state, "r1")
    assert outcome is not None and outcome.ok
    assert outcome.summary == "done: unchanged at c1; every app is up to date"


def test_a_request_meeting_a_delivery_under_way_counts_it() -> None:
    state = SyncState()
    requests.accept(state, "r1", T0, None)
    requests.start(state, ["r1"])
    requests.synced(state, ["r1"], "c1", T0, handed_over=True)
    # the delivery already running for c1 (another sync's) ends, then r1's own pass
    requests.pass_finished(state, a_pass("c1", T0 + timedelta(seconds=1), delivered("a", 115)), T0)
    outcome = requests.find(state, "r1")
    assert outcome is not None and outcome.state == RequestState.DELIVERING
    requests.pass_finished(state, a_pass("c1", T0 + timedelta(seconds=2), ids=("r1",)), T0)
    assert outcome.final and outcome.summary == "done: c1: 115 files to 1 of 1 apps"


def test_a_delivery_that_ended_during_the_sync_still_counts() -> None:
    state = SyncState()
    requests.accept(state, "r1", T0, None)
    requests.pass_finished(state, a_pass("c1", T0 - timedelta(seconds=5), delivered("a", 9)), T0)
    requests.pass_finished(state, a_pass("c1", T0 + timedelta(seconds=1), delivered("a", 2)), T0)
    requests.synced(state, ["r1"], "c1", T0, handed_over=False)
    outcome = requests.find(state, "r1")
    assert outcome is not None and outcome.ok
    # only the pass that ended after the request was asked
    assert outcome.summary.startswith("done: c1: 2 files to 1 of 1 apps")


def test_failures_and_later_status_win_per_app() -> None:
    state = SyncState()
    requests.accept(state, "r1", T0, None)
    requests.synced(state, ["r1"], "c1", T0, handed_over=True)
    at = T0 + timedelta(seconds=1)
    requests.pass_finished(
        state, a_pass("c1", at, delivered("a", 3), delivered("b", 1, failed=True), ids=("r1",)), at
    )
    outcome = requests.find(state, "r1")
    assert outcome is not None and outcome.final and not outcome.ok
    assert outcome.summary == "done: c1: 4 files to 1 of 2 apps; failed: b"


def test_refusals_and_bounds() -> None:
    state = SyncState()
    refused = requests.accept(state, "r0", T0, (RequestState.PAUSED, "paused"))
    assert refused.final and state.pending_request_ids == []
    for n in range(requests.OUTCOMES_KEPT + 5):
        requests.accept(state, f"r{n + 1}", T0, None)
    assert len(state.outcomes) == requests.OUTCOMES_KEPT
    assert requests.find(state, "r0") is None  # finished ones go first
    requests.stop_all(state, T0)
    assert all(o.state == RequestState.STOPPED for o in state.outcomes)
    for _ in range(requests.PASSES_KEPT + 3):
        requests.pass_finished(state, a_pass("c", T0), T0)
    assert len(state.recent_passes) == requests.PASSES_KEPT


def test_a_pass_reported_before_its_handover_resumed_answers_the_request() -> None:
    # A slow worker's task carries the handover of r1 and the child's reports: the
    # watch's pass (before r1's) and r1's own; their handlers run before the handover
    # resumes, so the workflow calls `synced` for r1 on the second report.
    state = SyncState()
    requests.accept(state, "r1", T0, None)
    requests.start(state, ["r1"])
    watch = a_pass("c1", T0 + timedelta(seconds=1), delivered("a", 3))
    assert requests.not_yet_handed_over(state, watch) == []
    requests.pass_finished(state, watch, T0)
    own = a_pass("c1", T0 + timedelta(seconds=2), ids=("r1",))
    assert requests.not_yet_handed_over(state, own) == ["r1"]
    requests.synced(state, ["r1"], own.commit, T0, handed_over=True)
    requests.pass_finished(state, own, T0)
    outcome = requests.find(state, "r1")
    assert outcome is not None and outcome.final
    assert outcome.summary == "done: c1: 3 files to 1 of 1 apps"
    # The handover resuming afterwards changes nothing.
    requests.synced(state, ["r1"], "c1", T0, handed_over=True)
    assert outcome.final and outcome.summary == "done: c1: 3 files to 1 of 1 apps"
    assert requests.not_yet_handed_over(state, own) == []
