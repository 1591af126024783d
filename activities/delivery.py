"""The delivery activity: push one app its changes for one repository (`FileDelivery`)."""

from __future__ import annotations

import contextvars
import threading
import time
import traceback

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from models.delivery import AppDelivery, DeliverInput, DeliveryProgress
from treecast.config import Settings
from treecast.redact import redact
from treecast.webhooks.files import HEARTBEAT_EVERY_SECONDS, FileDelivery


class _HeartbeatPump:
    """Repeats the latest progress every second from a side thread while a try runs.

    Why: the heartbeat timeout is short so that a killed worker is noticed within
    seconds, yet one POST may legitimately take up to the file timeout (and a big
    blob read a while). The pump keeps a live try alive through those; a dead
    process stops pumping, and the app's next try follows elsewhere.
    """

    def __init__(self, run: FileDelivery) -> None:
        self._run = run
        self._stop = threading.Event()
        # The copied context carries the activity's context into the side thread.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="treecast-heartbeat", daemon=True
        )

    def __enter__(self) -> _HeartbeatPump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_SECONDS):
            run = self._run
            if time.monotonic() - run.last_beat >= HEARTBEAT_EVERY_SECONDS:
                run.last_beat = time.monotonic()
                try:
                    activity.heartbeat(run.progress)
                except Exception as error:  # a missed beat is retried a second later
                    activity.logger.debug("heartbeat failed: %s", error)


class DeliveryActivities:
    """The file-delivery activity."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn
    def deliver_changes(self, input: DeliverInput) -> AppDelivery:
        """Deliver one app's changes for one repository at `input.commit`, resumably.

        Returns status synced, disabled (the app answered 410, or the watch was already
        disabled) or removed (app or watch gone). A refused or failed request raises a
        retryable ApplicationError whose type is a DeliveryErrorType, after counting
        the attempt on the watch; any other exception becomes a retryable
        ApplicationError typed with its class name. Either way the error's detail is the
        try's `DeliveryProgress`, counts up to date, with the chunk position to resume at.
        """
        # A retry of this same activity has its position in its own heartbeats; a new
        # try from DeliverFiles in its input.
        earlier = DeliveryProgress.from_details(activity.info().heartbeat_details)
        resume = (earlier.chunk if earlier is not None else None) or input.resume
        run = FileDelivery(self.settings, input, resume=resume, beat=activity.heartbeat)
        try:
            with _HeartbeatPump(run):
                result = run.run()
        except CancelledError:
            raise  # Temporal's own (cancel, heartbeat failure, shutdown): never rewrapped
        except ApplicationError as error:
            activity.logger.warning(
                "delivery of %s to %s failed after %d files: %s: %s",
                input.repository_id,
                input.app_id,
                run.done,
                error.type,
                error.message,
            )
            raise run.failure(
                error.message,
                type=error.type,
                non_retryable=error.non_retryable,
                next_retry_delay=error.next_retry_delay,
                category=error.category,  # benign when the app refused or was unreachable
            ) from None
        except Exception as error:
            # Anything else (a database or git hiccup, a bug) fails the try the same
            # way, retryable, so its counts and chunk position are not lost; its text is
            # redacted before it reaches the log or Temporal's history.
            error_type = type(error).__name__
            secrets = run.secrets()
            message = redact(str(error).strip() or error_type, secrets)
            activity.logger.warning(
                "delivery of %s to %s failed after %d files: %s\n%s",
                input.repository_id,
                input.app_id,
                run.done,
                error_type,
                redact("".join(traceback.format_exception(error)).rstrip(), secrets),
            )
            raise run.failure(message, type=error_type) from None
        activity.logger.info(
            "delivered %s at %s to %s: %s, %d created, %d updated, %d deleted",
            input.repository_id,
            (input.commit or "empty")[:12],
            input.app_id,
            result.status,
            result.created,
            result.updated,
            result.deleted,
        )
        return result
