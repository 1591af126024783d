"""What became of each sync request (`sync --wait`, the API's sync): pure bookkeeping.

No Temporal here, like `breaker.py`: `SyncRepository` calls these as its sync moves on,
and tests/workflows/test_requests.py checks the rules without a server. A request is
answered truthfully when it meets a delivery already under way: the passes of its
commit that finished after it was asked count towards it, so `watch` followed by
`sync --wait` reports the files that were just delivered, not "unchanged".
"""

from __future__ import annotations

from datetime import datetime

from models.delivery import AppDelivery
from models.sync import DeliveryPass, RequestState, SyncOutcome, SyncState

OUTCOMES_KEPT = 50  # recent requests kept for `sync --wait` and the API
PASSES_KEPT = 5  # recent delivery passes a request that arrives late may count


def find(state: SyncState, request_id: str) -> SyncOutcome | None:
    """The outcome of one request (None: unknown id)."""
    for outcome in state.outcomes:
        if outcome.request_id == request_id:
            return outcome
    return None


def accept(
    state: SyncState, request_id: str, now: datetime, refusal: tuple[RequestState, str] | None
) -> SyncOutcome:
    """Record a new request: pending for the next sync, or final at once when refused."""
    outcome = SyncOutcome(request_id=request_id, requested_at=now)
    if refusal is not None:
        outcome.commit = state.last_commit
        outcome.finish(refusal[0], now, refusal[1])
    else:
        state.pending_request_ids.append(request_id)
    outcomes = [*state.outcomes, outcome]
    # Drop the oldest finished ones first; unfinished requests are still awaited.
    while len(outcomes) > OUTCOMES_KEPT:
        finished = next((o for o in outcomes if o.final), outcomes[0])
        outcomes.remove(finished)
    state.outcomes = outcomes
    return outcome


def _open(state: SyncState, request_ids: list[str]) -> list[SyncOutcome]:
    found = (find(state, request_id) for request_id in request_ids)
    return [o for o in found if o is not None and not o.final]


def start(state: SyncState, request_ids: list[str]) -> None:
    """Their sync started."""
    for outcome in _open(state, request_ids):
        outcome.state = RequestState.SYNCING


def fail(
    state: SyncState, request_ids: list[str], now: datetime, error_type: str, message: str
) -> None:
    """Their sync failed (after its retries)."""
    for outcome in _open(state, request_ids):
        outcome.error_type = error_type
        outcome.finish(RequestState.FAILED, now, f"{error_type}: {message}")


def refuse(
    state: SyncState, request_ids: list[str], now: datetime, new_state: RequestState, message: str
) -> None:
    """They will not run (breaker open, paused, stopped, a handover that failed)."""
    for outcome in _open(state, request_ids):
        outcome.commit = outcome.commit or state.last_commit
        outcome.finish(new_state, now, message)


def refuse_pending(state: SyncState, now: datetime, new_state: RequestState, message: str) -> None:
    """Every request still waiting for a sync will not run; neither will the sync."""
    ids, state.pending_request_ids = state.pending_request_ids, []
    state.sync_requested = False
    refuse(state, ids, now, new_state, message)


def synced(
    state: SyncState,
    request_ids: list[str],
    commit: str | None,
    now: datetime,
    *,
    handed_over: bool,
) -> None:
    """Their sync found `commit`; `handed_over`: DeliverFiles got it and will report a pass.

    Passes of the same commit that finished since a request was asked count towards
    it: they delivered what this sync would otherwise have found missing.
    """
    for outcome in _open(state, request_ids):
        outcome.commit = commit
        for done in state.recent_passes:
            asked = outcome.requested_at
            finished = done.finished_at
            if done.commit == commit and (asked is None or finished is None or finished >= asked):
                outcome.apps = _merge(outcome.apps, done.apps)
        if handed_over:
            outcome.state = RequestState.DELIVERING
        elif outcome.apps:
            message = _summary(commit, outcome.apps) + " (by the delivery under way when asked)"
            outcome.finish(RequestState.DONE, now, message)
        else:
            short = (commit or "empty")[:12]
            outcome.finish(RequestState.DONE, now, f"unchanged at {short}; every app is up to date")


def not_yet_handed_over(state: SyncState, done: DeliveryPass) -> list[str]:
    """The requests `done` covered whose sync still awaits their handover.

    A slow worker gets the handover (DeliverFiles started or signalled) and the child's
    report of the pass that covered its requests in one workflow task, and the SDK runs
    the report's handler first: without `synced` first, the pass would skip them.
    """
    return [o.request_id for o in _open(state, done.request_ids) if o.state == RequestState.SYNCING]


def pass_finished(state: SyncState, done: DeliveryPass, now: datetime) -> None:
    """DeliverFiles finished a pass: the requests it covered are done, others at that commit
    count its deliveries."""
    state.recent_passes = [*state.recent_passes, _without_requests(done)][-PASSES_KEPT:]
    for outcome in state.outcomes:
        if outcome.final or outcome.state != RequestState.DELIVERING:
            continue
        if outcome.commit != done.commit and outcome.request_id not in done.request_ids:
            continue
        outcome.apps = _merge(outcome.apps, done.apps)
        if outcome.request_id in done.request_ids:
            outcome.commit = done.commit
            outcome.finish(RequestState.DONE, now, _summary(done.commit, outcome.apps))
    if state.delivering_commit == done.commit:
        state.delivering_commit = None


def stop_all(state: SyncState, now: datetime) -> None:
    """The repository was removed: nothing more happens to any request."""
    refuse_pending(state, now, RequestState.STOPPED, "the repository was removed")
    for outcome in state.outcomes:
        if not outcome.final:
            outcome.finish(
                RequestState.STOPPED, now, "the repository was removed before this sync finished"
            )


def _without_requests(done: DeliveryPass) -> DeliveryPass:
    return DeliveryPass(
        repository_id=done.repository_id,
        commit=done.commit,
        apps=list(done.apps),
        finished_at=done.finished_at,
    )


def _merge(mine: list[AppDelivery], more: list[AppDelivery]) -> list[AppDelivery]:
    """Per app: the files of both added up, the later status and error winning."""
    merged = {a.app_id: a for a in mine}
    for app in more:
        before = merged.get(app.app_id)
        if before is None:
            merged[app.app_id] = AppDelivery(**vars(app))
            continue
        merged[app.app_id] = AppDelivery(
            app_id=app.app_id,
            status=app.status,
            created=before.created + app.created,
            updated=before.updated + app.updated,
            deleted=before.deleted + app.deleted,
            skipped=before.skipped + app.skipped,
            error_type=app.error_type,
            error=app.error,
        )
    return [merged[k] for k in sorted(merged)]


def _summary(commit: str | None, apps: list[AppDelivery]) -> str:
    short = (commit or "empty")[:12]
    failed = [a.app_id for a in apps if a.error_type]
    files = sum(a.delivered for a in apps)
    return f"{short}: {files} files to {len(apps) - len(failed)} of {len(apps)} apps" + (
        f"; failed: {', '.join(failed)}" if failed else ""
    )
