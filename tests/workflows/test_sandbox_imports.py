"""What the workflow sandbox loads for every workflow run.

The sandbox imports a workflow's module afresh for each run; everything that module
imports is passed through unless it slips past the sandbox's import hook. In the first
wave of 10,000 repositories, loading the helpers and the other workflow's module again
for every run (and compiling them, without bytecode) was most of the worker's CPU
(docs/performance.md, First wave).
"""

from __future__ import annotations

import importlib._bootstrap_external as loaders
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.support.temporal_env import HISTORIES
from worker import workflows as all_workflows

pytestmark = pytest.mark.timeout(60)

WORKFLOW_MODULES = {
    "workflows",  # the package, which is empty
    "workflows.sync_repository",
    "workflows.deliver_files",
    "workflows.notify_breaker",
    "workflows.check_remotes",
    "workflows.bulk_watches",
}


def _loaded_while(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every module executed from source or bytecode from now on (any thread)."""
    loaded: Counter[str] = Counter()
    basics: Any = loaders._LoaderBasics  # type: ignore[attr-defined]  # CPython's base of file loaders
    original = basics.exec_module

    def exec_module(self: Any, module: ModuleType) -> None:
        loaded[module.__name__] += 1
        original(self, module)

    monkeypatch.setattr(basics, "exec_module", exec_module)
    return loaded


async def _replay(name: str) -> None:
    path = Path(HISTORIES) / f"{name}.json"
    history = WorkflowHistory.from_json(name, path.read_text())
    result = await Replayer(workflows=all_workflows()).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None


@pytest.mark.parametrize(
    ("history", "own", "other"),
    [
        ("sync_signals", "workflows.sync_repository", "workflows.deliver_files"),
        ("deliver_retry_after", "workflows.deliver_files", "workflows.sync_repository"),
    ],
)
async def test_a_run_loads_only_its_own_module(
    monkeypatch: pytest.MonkeyPatch, history: str, own: str, other: str
) -> None:
    await _replay(history)  # the outer imports are done
    loaded = _loaded_while(monkeypatch)
    await _replay(history)
    # Helpers (breaker, requests, search attributes, policies, app turns, models) are
    # shared with the worker, never loaded again.
    assert set(loaded) <= WORKFLOW_MODULES, sorted(set(loaded) - WORKFLOW_MODULES)
    # The replayer checks every workflow class once (one load of each module); the run
    # itself adds one load of its own module and none of the other workflow's.
    assert loaded[own] == 2, loaded
    assert loaded[other] == 1, loaded
