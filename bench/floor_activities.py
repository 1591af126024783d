"""The floor's activities, which do nothing (for `bench.temporal_floor`).

Their own module, passed through the sandbox by `bench.floor_workflows`, as Treecast's
workflows pass through `activities/`: a workflow run then loads only its workflow
module, and the floor pays no activity definitions per run that Treecast does not.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity

TIMEOUT = timedelta(seconds=60)  # every floor activity's start-to-close timeout


@activity.defn
def floor_snapshot(repository_id: str) -> str:
    """Stands for the snapshot: returns a commit id."""
    return "0" * 40


@activity.defn
def floor_watchers(repository_id: str) -> list[str]:
    """Stands for `list_watchers`: one app behind."""
    return ["app"]


@activity.defn
def floor_deliver(repository_id: str) -> int:
    """Stands for `deliver_changes`: delivered three files."""
    return 3
