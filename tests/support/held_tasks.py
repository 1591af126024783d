"""A worker's workflow runner that holds back one of SyncRepository's workflow tasks.

A slow worker picks up a workflow task late, and every event that arrived meanwhile comes
in that one task: a child's report can then land in the same task as the handover that
gave the child its request, and the SDK runs signal handlers before it resumes the code
that awaited the handover. `HoldingRunner` makes that interleaving happen on demand: it
fails the task that resolves the handover (the server retries it at once, carrying the
events that arrived since) until the pass report naming the request is in it too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation, WorkflowActivationJob
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import SerializationContext, StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from models.sync import DELIVERIES_FINISHED_SIGNAL, SYNC_WORKFLOW

# The activation jobs that resume `SyncRepository._hand_over`: DeliverFiles started, or
# the running one signalled.
CHILD_STARTED = "resolve_child_workflow_execution_start"
CHILD_SIGNALLED = "resolve_signal_external_workflow"


@dataclass
class Hold:
    """Which task to hold back: the first new one carrying `job` once armed, until the
    report of the pass that covered `request_id` comes in the same task."""

    job: str
    request_id: str
    armed: bool = False
    held: int = 0  # workflow tasks failed so far
    released: bool = False  # the task carrying both ran

    def holds(self, act: WorkflowActivation) -> bool:
        if not self.armed or self.released or act.is_replaying:
            return False
        if not any(job.WhichOneof("variant") == self.job for job in act.jobs):
            return False
        if any(self._reports_request(job) for job in act.jobs):
            self.released = True
            return False
        self.held += 1
        return True

    def _reports_request(self, job: WorkflowActivationJob) -> bool:
        signal = job.signal_workflow
        if not job.HasField("signal_workflow") or signal.signal_name != DELIVERIES_FINISHED_SIGNAL:
            return False
        [payload] = signal.input
        return self.request_id in json.loads(payload.data).get("request_ids", [])


class HoldingRunner(WorkflowRunner):
    """The SDK's sandbox, whose SyncRepository instances obey `hold`."""

    def __init__(self, hold: Hold) -> None:
        self._inner = SandboxedWorkflowRunner()
        self._hold = hold

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        self._inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = self._inner.create_instance(det)
        if det.defn.name != SYNC_WORKFLOW:
            return instance
        return _Holding(instance, self._hold)

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        self._inner.set_worker_level_failure_exception_types(types)


class _Holding(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, hold: Hold) -> None:
        self._inner = inner
        self._hold = hold

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        if not self._hold.holds(act):
            return self._inner.activate(act)
        time.sleep(0.05)  # the retry comes at once: don't spin
        completion = WorkflowActivationCompletion(run_id=act.run_id)
        completion.failed.failure.message = "held back until the pass report is in this task"
        return completion

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        return self._inner.get_serialization_context(command_info)  # type: ignore[arg-type]

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:
        return self._inner.get_external_store_context(command_info)  # type: ignore[arg-type]

    def get_info(self) -> temporalio.workflow.Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()
