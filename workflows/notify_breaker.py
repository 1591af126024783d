"""NotifyBreaker: the detached child that tells every watching app the breaker opened or closed
(or, given `app_ids`, tells those apps alone that the git host refused their credentials).

Apps are notified one after another in their stable order. Each notice has a
short, bounded retry policy, so one dead app costs a few notice timeouts and
never holds back the rest.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.notices import NoticeActivities
    from activities.watches import WatchActivities
    from models.delivery import BreakerInfo, NoticeInput, NoticeResult, WatchersInput
    from models.sync import NotifyBreakerInput, NotifyBreakerResult
    from workflows.policies import (
        DB_RETRY,
        DB_TIMEOUT,
        NOTICE_MARGIN,
        NOTICE_RETRY,
        TO_APPS,
        failure_of,
    )


def _iso(value: object) -> str | None:
    return value.isoformat() if value is not None else None  # type: ignore[attr-defined]


@workflow.defn
class NotifyBreaker:
    """Send `sync_failed` or `sync_recovered` to every app watching a repository."""

    @workflow.run
    async def run(self, input: NotifyBreakerInput) -> NotifyBreakerResult:
        """Notify each app once, in order; failures are reported, not raised."""
        if input.app_ids is not None:
            apps = list(input.app_ids)  # the apps that lost their access, alone
        else:
            watchers = await workflow.execute_activity_method(
                WatchActivities.list_watchers,
                WatchersInput(repository_id=input.repository_id),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"apps watching {input.repository_id}",
            )
            apps = watchers.app_ids
        breaker = BreakerInfo(
            status=input.breaker_status,
            consecutive_failures=input.consecutive_failures,
            threshold=input.threshold,
            cooldown_until=_iso(input.cooldown_until),
            opened_at=_iso(input.opened_at),
            failed_syncs=input.failed_syncs,
        )
        timeout = timedelta(seconds=input.notice_timeout_seconds) + NOTICE_MARGIN
        results: list[NoticeResult] = []
        for number, app_id in enumerate(apps, start=1):
            workflow.set_current_details(
                f"{input.event} for {input.repository_id}: app {app_id} ({number} of {len(apps)})"
            )
            notice = NoticeInput(
                app_id=app_id,
                repository_id=input.repository_id,
                event=input.event,
                transition_id=input.transition_id,
                breaker=breaker,
                error_type=input.error_type,
                error_message=input.error_message,
                commit=input.commit,
                occurred_at=input.occurred_at.isoformat(),
            )
            try:
                result = await workflow.execute_activity_method(
                    NoticeActivities.send_notice,
                    notice,
                    start_to_close_timeout=timeout,
                    retry_policy=NOTICE_RETRY,
                    priority=TO_APPS,
                    summary=f"{input.event} for {input.repository_id} to app {app_id}",
                )
            except ActivityError as err:
                error_type, message = failure_of(err)
                result = NoticeResult(
                    app_id=app_id, delivered=False, error_type=error_type, error=message
                )
            results.append(result)
        sent = sum(1 for r in results if r.delivered)
        workflow.set_current_details(
            f"{input.event} for {input.repository_id}: {sent} of {len(apps)} apps acknowledged"
        )
        return NotifyBreakerResult(
            repository_id=input.repository_id, event=input.event, results=results
        )
