"""The workflow sandbox without its trip into the sandbox for every payload it converts.

The SDK (temporalio 1.35) resolves a serialization context for each payload sequence of
every activation and completion, three visitor passes each way, by asking the workflow
instance; the sandboxed instance answers by compiling and running a code string inside
the sandbox (`_Instance.get_serialization_context`). The context only matters to a
payload codec, external storage, or a payload or failure converter that takes it: with
none of them, every answer leads to the same conversion. `runner_for` then gives a
sandbox whose instances answer "no context" at once; otherwise it is the SDK's own
sandbox, untouched.
docs/performance.md ("The sandbox's serialization context") has the measurements and
the report for upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import temporalio.converter
import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import SerializationContext, StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

# Any context: a converter that uses one answers `with_context` with a new converter.
_PROBE = temporalio.converter.WorkflowSerializationContext(namespace="-", workflow_id="-")


def runner_for(data_converter: temporalio.converter.DataConverter) -> WorkflowRunner:
    """The sandbox for a worker whose client converts with `data_converter`."""
    if (
        data_converter.payload_codec is None
        and data_converter.external_storage is None
        # Nor a payload or failure converter that takes the context.
        and data_converter.with_context(_PROBE) is data_converter
    ):
        return ContextFreeSandbox()
    return SandboxedWorkflowRunner()


@dataclass(frozen=True)
class ContextFreeSandbox(SandboxedWorkflowRunner):
    """The SDK's sandbox (same restrictions, same isolation), for a data converter with
    no payload codec and no external storage only."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFree(super().create_instance(det))


class _ContextFree(WorkflowInstance):
    """A sandboxed instance that answers the converter's context questions itself."""

    def __init__(self, inner: WorkflowInstance) -> None:
        self._inner = inner

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self._inner.activate(act)

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        return None  # the context-free converter: the same bytes without a codec

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:
        return StorageDriverStoreContext(target=None)  # no external storage to tell

    def get_info(self) -> temporalio.workflow.Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()
