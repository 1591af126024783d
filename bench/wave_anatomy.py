"""Where a first sync's delivery waited, read from the workflows' histories.

`python -m bench.first_wave --anatomy` calls `anatomy` after the wave, before the dev
server stops: for every repository it reads its `SyncRepository` and `DeliverFiles`
histories and splits the path from the snapshot's end to the delivery's end into its
steps (a task waiting in the queue, a task running on the worker, the server starting
the child), so a slow synced -> delivered says which queue it waited in.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

# The steps from the snapshot's completion to the delivery's, in order.
STEPS = (
    "parent task waited",  # the SyncRepository task after the snapshot, in the queue
    "parent task ran",  # on the worker: list_watchers (local) up to the child's start command
    "child started",  # the server starting DeliverFiles
    "child task waited",  # DeliverFiles' first task, in the queue
    "child task ran",
    "delivery waited",  # deliver_changes in the queue (0 when dispatched eagerly)
    "delivery ran",
)

# Not a step: 1 when the parent's task timed out on the worker's sticky queue first
# (`sticky_queue_schedule_to_start_timeout`) and waited again on the shared queue.
STICKY_TIMEOUTS = "sticky timeouts"


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.ToMicroseconds() / 1e6


def _first(
    events: Sequence[HistoryEvent], kind: int, after: int = 0, activity: str | None = None
) -> HistoryEvent | None:
    for event in events:
        if event.event_id <= after or event.event_type != kind:
            continue
        if activity is not None:
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name != activity:
                continue
        return event
    return None


def _activity_ends(
    events: Sequence[HistoryEvent], scheduled: HistoryEvent
) -> tuple[HistoryEvent | None, HistoryEvent | None]:
    """An activity's started and completed events."""
    started = completed = None
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            if (
                event.activity_task_started_event_attributes.scheduled_event_id
                == scheduled.event_id
            ):
                started = event
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if attributes.scheduled_event_id == scheduled.event_id:
                completed = event
    return started, completed


def steps_of(
    parent: Sequence[HistoryEvent],
    child: Sequence[HistoryEvent],
    activities: tuple[str, str] = ("snapshot_repository", "deliver_changes"),
) -> dict[str, float] | None:
    """The seconds each of STEPS took for one repository's first sync (None when its
    histories do not hold the whole path); `activities`: the snapshot's and the
    delivery's activity types (the floor's have other names)."""
    kind = EventType
    snapshot = _first(parent, kind.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, activity=activities[0])
    deliver = _first(child, kind.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, activity=activities[1])
    if snapshot is None or deliver is None or not child:
        return None
    _, synced = _activity_ends(parent, snapshot)
    if synced is None:
        return None
    task = _first(parent, kind.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, after=synced.event_id)
    picked = _first(parent, kind.EVENT_TYPE_WORKFLOW_TASK_STARTED, after=synced.event_id)
    initiated = _first(
        parent, kind.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED, after=synced.event_id
    )
    child_task = _first(child, kind.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED)
    child_picked = _first(child, kind.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    child_done = _first(child, kind.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    started, delivered = _activity_ends(child, deliver)
    moments = [
        synced,
        task,
        picked,
        initiated,
        child[0],
        child_task,
        child_picked,
        child_done,
        deliver,
        started,
        delivered,
    ]
    if any(moment is None for moment in moments):
        return None
    at = [_seconds(moment) for moment in moments if moment is not None]
    assert picked is not None
    timed_out = any(
        event.event_type == kind.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        for event in parent
        if synced.event_id < event.event_id < picked.event_id
    )
    # synced -> task scheduled is the same instant (the completion schedules the task).
    spans = [at[2] - at[0], at[3] - at[2], at[4] - at[3], at[6] - at[5], at[7] - at[6]]
    spans += [at[9] - at[8], at[10] - at[9]]
    return {**dict(zip(STEPS, spans, strict=True)), STICKY_TIMEOUTS: float(timed_out)}


async def anatomy(
    client: Any,
    workflow_ids: Sequence[tuple[str, str]],
    activities: tuple[str, str] = ("snapshot_repository", "deliver_changes"),
    concurrency: int = 16,
) -> list[dict[str, float]]:
    """`steps_of` for each (parent, child) pair of workflow ids whose histories hold the
    whole path."""
    pending = list(workflow_ids)
    found: list[dict[str, float]] = []

    async def events(workflow_id: str) -> list[HistoryEvent]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return list(history.events)

    async def one_after_another() -> None:
        while pending:
            parent_id, child_id = pending.pop()
            steps = steps_of(await events(parent_id), await events(child_id), activities)
            if steps is not None:
                found.append(steps)

    await asyncio.gather(*(one_after_another() for _ in range(concurrency)))
    return found


def report(found: list[dict[str, float]]) -> list[str]:
    """Each step's p50 / p95 / max, and its share of the slowest twentieth's path."""
    if not found:
        return ["  anatomy: no repository's histories held the whole path"]
    totals = [sum(steps[step] for step in STEPS) for steps in found]
    cut = sorted(totals)[int(0.95 * (len(totals) - 1))]
    slowest = [steps for steps, total in zip(found, totals, strict=True) if total >= cut]
    lines = [
        f"  anatomy of snapshot done -> delivery done ({len(found)} repositories; "
        f"the slowest 5 %: {len(slowest)}, from {cut:.1f} s; the parent's task timed out on "
        f"the sticky queue {sum(steps.get(STICKY_TIMEOUTS, 0) for steps in found):.0f} times)"
    ]
    for step in STEPS:
        values = sorted(steps[step] for steps in found)
        p95 = values[int(0.95 * (len(values) - 1))]
        share = statistics.mean(steps[step] for steps in slowest)
        lines.append(
            f"    {step:<18} p50 {statistics.median(values):6.2f}s  p95 {p95:6.2f}s  "
            f"max {values[-1]:6.2f}s  (slowest 5 %: mean {share:6.2f}s)"
        )
    return lines
