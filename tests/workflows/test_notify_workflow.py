"""NotifyBreaker: one notice per app, in order; a dead app costs a few attempts, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from models.events import SyncEvent
from models.git import GitErrorType
from models.sync import BreakerStatus, NotifyBreakerInput, notify_workflow_id
from tests.support.temporal_env import (
    FakeTreecast,
    new_task_queue,
    save_history,
    treecast_worker,
    unique,
)
from workflows.notify_breaker import NotifyBreaker

pytestmark = pytest.mark.timeout(60)


async def test_a_dead_app_does_not_hold_back_the_others(time_env: WorkflowEnvironment) -> None:
    repo = unique("repo-x")
    fake = FakeTreecast(apps=["app-c", "app-b", "app-a"], dead_notice_apps={"app-b"})
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    notice = NotifyBreakerInput(
        repository_id=repo,
        event=SyncEvent.SYNC_FAILED,
        transition_id=notify_workflow_id(repo, SyncEvent.SYNC_FAILED, at),
        occurred_at=at,
        breaker_status=BreakerStatus.OPEN,
        consecutive_failures=5,
        threshold=5,
        cooldown_until=at + timedelta(minutes=30),
        opened_at=at,
        error_type=GitErrorType.AUTHENTICATION_FAILED,
        error_message="authentication failed for https://***@example.com/x.git",
        notice_timeout_seconds=1,
    )
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await time_env.client.start_workflow(
            NotifyBreaker.run, notice, id=notice.transition_id, task_queue=queue
        )
        result = await handle.result()
    assert [(r.app_id, r.delivered) for r in result.results] == [
        ("app-a", True),
        ("app-b", False),
        ("app-c", True),
    ]
    assert result.results[1].error_type == "WebhookTransportError"
    assert fake.notice_attempts == {"app-a": 1, "app-b": 3, "app-c": 1}  # bounded retries
    sent = fake.notices[0]
    assert sent.transition_id == f"notify/{repo}/sync_failed/2030-01-01T12:00:00+00:00"
    assert sent.occurred_at == "2030-01-01T12:00:00+00:00"
    assert sent.breaker.cooldown_until == "2030-01-01T12:30:00+00:00"
    assert sent.breaker.status == "open" and sent.breaker.threshold == 5
    assert sent.error_type == GitErrorType.AUTHENTICATION_FAILED
    await save_history(handle, "notify_dead_app")
