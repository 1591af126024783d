"""The per-repository circuit breaker as a pure state machine (no Temporal, no clock).

closed --(threshold consecutive failed syncs)--> open          [notice: sync_failed]
open   --(cooldown ends, on a durable timer)---> half_open
half_open --(successful sync)------------------> closed        [notice: sync_recovered]
half_open --(failed sync)----------------------> open          (another cooldown, no notice)
any    --(reset)-------------------------------> closed        (the next success answers an
                                                                outstanding sync_failed)

Every function returns a new `BreakerState` plus the notice to send, if any, so
the workflow decides nothing about notices itself and the rules are unit-tested
without a server. A notice is sent once per outage: a failed probe re-opens the
breaker quietly (the apps already know), and `sync_recovered` answers exactly
one `sync_failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from models.events import SyncEvent
from models.sync import BreakerState, BreakerStatus


@dataclass(frozen=True)
class Transition:
    """A breaker step's new state and the notice it calls for (None: none)."""

    state: BreakerState
    notice: str | None = None  # a SyncEvent value


def record_failure(
    state: BreakerState, now: datetime, threshold: int, cooldown: timedelta
) -> Transition:
    """A sync failed (after its retries)."""
    failures = state.consecutive_failures + 1
    if state.status == BreakerStatus.HALF_OPEN:
        return Transition(
            replace(
                state,
                status=BreakerStatus.OPEN,
                consecutive_failures=failures,
                cooldown_until=now + cooldown,
                failed_probes=state.failed_probes + 1,
            )
        )
    if state.status == BreakerStatus.OPEN:
        # Not expected (an open breaker does not sync), but never lose a count.
        return Transition(replace(state, consecutive_failures=failures))
    if failures < threshold:
        return Transition(replace(state, consecutive_failures=failures))
    opened = BreakerState(
        status=BreakerStatus.OPEN,
        consecutive_failures=failures,
        opened_at=now,
        cooldown_until=now + cooldown,
        failed_probes=0,
        notice_outstanding=True,
    )
    # After a manual reset the apps may still hold an unanswered sync_failed; a new
    # opening is a new outage all the same, so they hear about it.
    return Transition(opened, SyncEvent.SYNC_FAILED)


def record_success(state: BreakerState) -> Transition:
    """A sync succeeded: close, and answer an outstanding `sync_failed`."""
    closed = BreakerState(status=BreakerStatus.CLOSED)
    if state.notice_outstanding:
        return Transition(closed, SyncEvent.SYNC_RECOVERED)
    return Transition(closed)


def cooldown_over(state: BreakerState, now: datetime) -> bool:
    """True when an open breaker's cooldown has ended."""
    return (
        state.status == BreakerStatus.OPEN
        and state.cooldown_until is not None
        and now >= state.cooldown_until
    )


def half_open(state: BreakerState, now: datetime) -> BreakerState:
    """Let one probe sync through once the cooldown has ended (unchanged otherwise)."""
    if not cooldown_over(state, now):
        return state
    return replace(state, status=BreakerStatus.HALF_OPEN, cooldown_until=None)


def reset(state: BreakerState) -> BreakerState:
    """An operator closed the breaker; failures count from zero again."""
    return BreakerState(
        status=BreakerStatus.CLOSED,
        opened_at=state.opened_at if state.notice_outstanding else None,
        failed_probes=state.failed_probes if state.notice_outstanding else 0,
        notice_outstanding=state.notice_outstanding,
    )


def allows_sync(state: BreakerState) -> bool:
    """Whether git may be touched now (open: no; closed and half-open: yes)."""
    return state.status != BreakerStatus.OPEN
