"""send_notice: one signed sync_failed / sync_recovered per app per breaker transition."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notices import NoticeActivities
from examples.receiver import Receiver
from models.delivery import BreakerInfo, DeliveryErrorType, NoticeInput, NoticeResult
from models.events import SyncEvent
from models.tables import DeliveryAttempt, Watch, WatchStatus
from tests.support.receiver_fixture import register
from treecast.config import Settings
from treecast.db import session_scope

OPEN = BreakerInfo(
    status="open", consecutive_failures=5, threshold=5, cooldown_until="2026-01-01T00:30:00+00:00"
)
CLOSED = BreakerInfo(
    status="closed",
    consecutive_failures=0,
    threshold=5,
    opened_at="2026-01-01T00:00:00+00:00",
    failed_syncs=3,
)


@pytest.fixture
def ids(settings: Settings, receiver: Receiver, receiver_secret: str) -> tuple[str, str]:
    return register(settings, receiver.url, [receiver_secret], "https://git.example.com/acme/docs")


def failed(app_id: str, repository_id: str, transition: str = "t1") -> NoticeInput:
    return NoticeInput(
        app_id=app_id,
        repository_id=repository_id,
        event=SyncEvent.SYNC_FAILED,
        transition_id=transition,
        breaker=OPEN,
        error_type="AuthenticationFailed",
        error_message="fatal: could not read from https://x:ghp_secret123@git.example.com",
        occurred_at="2026-01-01T00:00:00+00:00",
    )


def send(settings: Settings, notice: NoticeInput) -> NoticeResult:
    result = ActivityEnvironment().run(NoticeActivities(settings).send_notice, notice)
    assert isinstance(result, NoticeResult)
    return result


def test_sync_failed_is_signed_and_redacted(
    settings: Settings, receiver: Receiver, ids: tuple[str, str]
) -> None:
    result = send(settings, failed(*ids))
    assert result.delivered
    (request,) = receiver.requests
    assert request.raw_path == "/sync_failed" and request.headers["treecast-event"] == "sync_failed"
    (notice,) = receiver.notices
    assert list(notice) == ["event", "repository", "error", "circuit_breaker", "timestamp"]
    assert notice["repository"] == {
        "repository_id": ids[1],
        "url": "https://git.example.com/acme/docs",
        "owner": "acme",
        "name": "docs",
        "ref": None,
    }
    assert notice["error"]["type"] == "AuthenticationFailed"
    assert "ghp_secret123" not in notice["error"]["message"]
    assert notice["circuit_breaker"] == {
        "status": "open",
        "consecutive_failures": 5,
        "threshold": 5,
        "cooldown_until": "2026-01-01T00:30:00+00:00",
    }
    with session_scope(settings.database_url) as session:
        (attempt,) = session.exec(select(DeliveryAttempt)).all()
        assert (attempt.event, attempt.path, attempt.http_status) == ("sync_failed", None, 200)


def test_one_notice_per_transition(
    settings: Settings, receiver: Receiver, ids: tuple[str, str]
) -> None:
    send(settings, failed(*ids))
    send(settings, failed(*ids))  # a retry of the same transition
    first, again = receiver.requests
    assert first.webhook_id == again.webhook_id and again.duplicate
    assert len(receiver.notices) == 1
    send(settings, failed(*ids, transition="t2"))  # a new outage
    assert receiver.requests[-1].webhook_id != first.webhook_id
    assert len(receiver.notices) == 2


def test_sync_recovered(settings: Settings, receiver: Receiver, ids: tuple[str, str]) -> None:
    notice = NoticeInput(
        app_id=ids[0],
        repository_id=ids[1],
        event=SyncEvent.SYNC_RECOVERED,
        transition_id="t3",
        breaker=CLOSED,
        commit="c" * 40,
        occurred_at="2026-01-01T01:00:00+00:00",
    )
    assert send(settings, notice).delivered
    (body,) = receiver.notices
    assert list(body) == ["event", "repository", "commit_sha", "circuit_breaker", "timestamp"]
    assert body["commit_sha"] == "c" * 40
    assert body["circuit_breaker"] == {
        "status": "closed",
        "opened_at": "2026-01-01T00:00:00+00:00",
        "failed_syncs": 3,
    }
    assert body["timestamp"] == "2026-01-01T01:00:00+00:00"


def test_failures_raise_for_the_retry_policy(
    settings: Settings, receiver: Receiver, ids: tuple[str, str]
) -> None:
    receiver.fail_next(503, headers={"retry-after": "3"})
    with pytest.raises(ApplicationError) as failure:
        send(settings, failed(*ids))
    assert failure.value.type == DeliveryErrorType.HTTP_STATUS
    assert failure.value.next_retry_delay == timedelta(seconds=3)
    receiver.delay_next(1.0)
    with pytest.raises(ApplicationError, match=r"did not answer within 0\.3 s"):
        send(settings.model_copy(update={"notice_timeout_seconds": 0.3}), failed(*ids))
    assert send(settings, failed(*ids)).delivered
    assert len({r.webhook_id for r in receiver.requests}) == 1
    assert len(receiver.notices) == 1


def test_gone_disables_and_missing_is_quiet(
    settings: Settings, receiver: Receiver, ids: tuple[str, str]
) -> None:
    receiver.fail_next(410)
    result = send(settings, failed(*ids))
    assert (result.delivered, result.error_type) == (False, DeliveryErrorType.GONE)
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, ids)
        assert watch is not None and watch.status == WatchStatus.DISABLED
    receiver.requests.clear()
    assert not send(settings, failed(*ids)).delivered  # disabled: nothing sent
    assert receiver.requests == []
    missing = send(settings, failed("app_000000000000000000000000", ids[1]))
    assert (missing.delivered, missing.error_type) == (False, DeliveryErrorType.WATCH_MISSING)


def test_blocked_target_is_not_retried(
    settings: Settings, tmp_path: Path, receiver_secret: str
) -> None:
    strict = settings.model_copy(update={"allow_private_urls": False})
    app_id, repo_id = register(
        strict, "http://127.0.0.1:9", [receiver_secret], "https://g.example/o/r"
    )
    with pytest.raises(ApplicationError) as failure:
        send(strict, failed(app_id, repo_id))
    assert failure.value.type == DeliveryErrorType.BLOCKED_ADDRESS and failure.value.non_retryable
