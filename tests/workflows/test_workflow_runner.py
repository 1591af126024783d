"""The worker's sandbox: no trip into the sandbox per payload for a serialization context.

With the SDK's own sandbox, every payload sequence of every activation and completion
asks the sandboxed instance for its serialization context, which compiles and runs a
code string inside the sandbox (docs/performance.md, "The sandbox's serialization
context"). Without a payload codec or external storage the answer changes nothing, and
`treecast.workflow_runner` answers it outside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.converter import (
    DataConverter,
    DefaultPayloadConverter,
    PayloadCodec,
    SerializationContext,
)
from temporalio.worker import Replayer, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _runner as sandbox_runner

from tests.support.temporal_env import HISTORIES
from treecast.workflow_runner import ContextFreeSandbox, runner_for
from worker import workflows as all_workflows

pytestmark = pytest.mark.timeout(120)


class _Identity(PayloadCodec):
    async def encode(self, payloads: Any) -> Any:
        return list(payloads)

    async def decode(self, payloads: Any) -> Any:
        return list(payloads)


def _count_context_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the sandbox's context lookups (each one compiles and runs code in it)."""
    calls = [0]
    original = sandbox_runner._Instance.get_serialization_context

    def counted(self: Any, command_info: Any) -> Any:
        calls[0] += 1
        return original(self, command_info)

    monkeypatch.setattr(sandbox_runner._Instance, "get_serialization_context", counted)
    return calls


async def _replay_all(runner: WorkflowRunner) -> None:
    for path in sorted(Path(HISTORIES).glob("*.json")):
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await Replayer(workflows=all_workflows(), workflow_runner=runner).replay_workflow(
            history, raise_on_replay_failure=False
        )
        assert result.replay_failure is None, (path.name, result.replay_failure)


class _ContextAware(DefaultPayloadConverter):
    """A payload converter that uses the serialization context (a new one per context)."""

    def with_context(self, context: SerializationContext) -> _ContextAware:
        return type(self)()


def test_the_sdk_sandbox_is_kept_where_a_converter_uses_the_context() -> None:
    aware = DataConverter(payload_converter_class=_ContextAware)
    runner = runner_for(aware)
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert not isinstance(runner, ContextFreeSandbox)


def test_the_sdk_sandbox_is_kept_where_a_codec_or_storage_needs_the_context() -> None:
    assert isinstance(runner_for(DataConverter.default), ContextFreeSandbox)
    with_codec = DataConverter(payload_codec=_Identity())
    runner = runner_for(with_codec)
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert not isinstance(runner, ContextFreeSandbox)


async def test_every_history_replays_without_asking_the_sandbox_for_a_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_context_calls(monkeypatch)
    await _replay_all(SandboxedWorkflowRunner())
    assert calls[0] > 0  # the SDK's sandbox asks, payload sequence by payload sequence
    calls[0] = 0
    await _replay_all(runner_for(DataConverter.default))
    assert calls[0] == 0
