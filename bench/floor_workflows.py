"""The shape of a first sync with nothing but Temporal in it (for `bench.temporal_floor`).

The same steps as `SyncRepository` and `DeliverFiles` take for a new repository, in
the same order, with activities that do nothing: start by signal, upsert the search
attributes, one activity (the snapshot), upsert again, one local activity (the
watchers), start a detached child and wait for its report; the child runs one activity
(the delivery), signals the parent and completes. What the dev server and a Python
worker spend on these is the floor under Treecast's first wave on the same machine.
"""

from temporalio import workflow

# Everything but this module is passed through, as in Treecast's workflow modules.
with workflow.unsafe.imports_passed_through():
    import models.search_attributes as search_attributes
    from bench.floor_activities import TIMEOUT, floor_snapshot, floor_watchers
    from bench.floor_deliver import FINISHED_SIGNAL, FloorDeliver
    from workflows.policies import TO_APPS


@workflow.defn
class FloorSync:
    """`SyncRepository`'s first sync, then its wait for the next poll."""

    def __init__(self) -> None:
        self._requested = False
        self._finished = False

    @workflow.signal
    def sync_now(self) -> None:
        self._requested = True

    @workflow.signal(name=FINISHED_SIGNAL)
    def finished(self, files: int) -> None:
        self._finished = True

    @workflow.run
    async def run(self, repository_id: str) -> None:
        workflow.upsert_search_attributes(
            search_attributes.updates(repository_id, "closed", None, 0)
        )
        await workflow.wait_condition(lambda: self._requested)
        commit = await workflow.execute_activity(
            floor_snapshot, repository_id, start_to_close_timeout=TIMEOUT
        )
        workflow.upsert_search_attributes(
            search_attributes.updates(repository_id, "closed", commit, 0)
        )
        await workflow.execute_local_activity(
            floor_watchers, repository_id, start_to_close_timeout=TIMEOUT
        )
        await workflow.start_child_workflow(
            FloorDeliver.run,
            repository_id,
            id=f"floor-deliver/{repository_id}",
            priority=TO_APPS,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
        # The next poll, an hour away: the child's report and its completion land here.
        await workflow.wait_condition(lambda: False, timeout=3600)
