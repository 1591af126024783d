"""The breaker state machine on its own: no Temporal, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.events import SyncEvent
from models.sync import BreakerState, BreakerStatus
from workflows import breaker
from workflows.sync_repository import poll_jitter

T0 = datetime(2030, 1, 1, tzinfo=UTC)
COOLDOWN = timedelta(minutes=30)


def fail(state: BreakerState, at: datetime = T0, threshold: int = 3) -> breaker.Transition:
    return breaker.record_failure(state, at, threshold, COOLDOWN)


def open_breaker(threshold: int = 3) -> BreakerState:
    state = BreakerState()
    for _ in range(threshold):
        state = fail(state, threshold=threshold).state
    return state


def test_exactly_threshold_failures_open_it_with_one_notice() -> None:
    state = BreakerState()
    notices: list[str | None] = []
    for _ in range(2):
        step = fail(state)
        state, notices = step.state, [*notices, step.notice]
        assert state.status == BreakerStatus.CLOSED
    step = fail(state)
    assert step.notice == SyncEvent.SYNC_FAILED
    assert notices == [None, None]
    assert step.state.status == BreakerStatus.OPEN
    assert step.state.consecutive_failures == 3
    assert step.state.cooldown_until == T0 + COOLDOWN
    assert step.state.opened_at == T0
    assert not breaker.allows_sync(step.state)


def test_success_while_closed_resets_the_count_without_notice() -> None:
    state = fail(fail(BreakerState()).state).state
    step = breaker.record_success(state)
    assert step.notice is None
    assert step.state == BreakerState()


def test_cooldown_then_half_open_then_success_recovers() -> None:
    state = open_breaker()
    assert breaker.half_open(state, T0 + COOLDOWN - timedelta(seconds=1)) is state
    assert not breaker.cooldown_over(state, T0 + COOLDOWN - timedelta(seconds=1))
    probing = breaker.half_open(state, T0 + COOLDOWN)
    assert probing.status == BreakerStatus.HALF_OPEN
    assert breaker.allows_sync(probing)
    step = breaker.record_success(probing)
    assert step.notice == SyncEvent.SYNC_RECOVERED
    assert step.state.status == BreakerStatus.CLOSED
    assert step.state.consecutive_failures == 0
    assert not step.state.notice_outstanding


def test_half_open_failure_reopens_quietly_for_another_cooldown() -> None:
    later = T0 + COOLDOWN
    probing = breaker.half_open(open_breaker(), later)
    step = fail(probing, at=later)
    assert step.notice is None  # one sync_failed per outage
    assert step.state.status == BreakerStatus.OPEN
    assert step.state.cooldown_until == later + COOLDOWN
    assert step.state.failed_probes == 1
    assert step.state.opened_at == T0
    assert step.state.consecutive_failures == 4
    # and the eventual recovery is still announced, once
    again = breaker.half_open(step.state, later + COOLDOWN)
    assert breaker.record_success(again).notice == SyncEvent.SYNC_RECOVERED


def test_reset_closes_and_the_next_success_answers_the_outstanding_notice() -> None:
    state = breaker.reset(open_breaker())
    assert state.status == BreakerStatus.CLOSED
    assert state.consecutive_failures == 0
    assert breaker.allows_sync(state)
    assert breaker.record_success(state).notice == SyncEvent.SYNC_RECOVERED


def test_reset_then_new_outage_sends_a_new_sync_failed() -> None:
    state = breaker.reset(open_breaker())
    notices: list[str | None] = []
    for _ in range(3):
        step = fail(state)
        state, notices = step.state, [*notices, step.notice]
    assert notices == [None, None, SyncEvent.SYNC_FAILED]


def test_reset_of_a_closed_breaker_sends_nothing_later() -> None:
    state = breaker.reset(fail(BreakerState()).state)
    assert state == BreakerState()
    assert breaker.record_success(state).notice is None


def test_threshold_one_opens_on_the_first_failure() -> None:
    step = fail(BreakerState(), threshold=1)
    assert step.notice == SyncEvent.SYNC_FAILED


def test_poll_jitter_is_stable_small_and_spread() -> None:
    assert poll_jitter("r1", 60) == poll_jitter("r1", 60)
    offsets = {poll_jitter(f"repo-{i}", 600) for i in range(1000)}
    assert all(timedelta(0) <= o < timedelta(seconds=30) for o in offsets)
    assert len({round(o.total_seconds()) for o in offsets}) >= 25  # spread over the seconds
    assert poll_jitter("r1", 10) < timedelta(seconds=1)
