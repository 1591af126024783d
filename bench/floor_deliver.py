"""The floor's `DeliverFiles` (for `bench.temporal_floor`), in a module of its own.

As in Treecast, where `DeliverFiles` signals its parent by name and a run of one
workflow loads only its own module: `FloorSync` passes this module through.
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.floor_activities import TIMEOUT, floor_deliver
    from workflows.policies import TO_APPS

FINISHED_SIGNAL = "finished"  # FloorSync.finished, named as Treecast names its signals


@workflow.defn
class FloorDeliver:
    """`DeliverFiles` for one pass: one activity, a report to the parent, done."""

    @workflow.run
    async def run(self, repository_id: str) -> int:
        files = await workflow.execute_activity(
            floor_deliver, repository_id, start_to_close_timeout=TIMEOUT, priority=TO_APPS
        )
        parent = workflow.info().parent
        assert parent is not None
        await workflow.get_external_workflow_handle(parent.workflow_id).signal(
            FINISHED_SIGNAL, files
        )
        return files
