"""The delivery activity: push one app its changes for one repository (`FileDelivery`)."""

from __future__ import annotations

import traceback

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities.failures import application_error
from models.delivery import AppDelivery, DeliverInput, DeliveryProgress
from treecast.config import Settings
from treecast.delivery.files import FileDelivery
from treecast.gitcache.errors import GitError
from treecast.redact import redact
from treecast.webhooks.sender import WebhookError


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
        the attempt on the watch; a git failure one typed with its GitErrorType; any
        other exception becomes a retryable ApplicationError typed with its class name.
        Either way the error's detail is the try's `DeliveryProgress`, counts up to
        date, with the chunk position to resume at.
        """
        # A retry of this same activity has its position in its own heartbeats; a new
        # try from DeliverFiles in its input.
        earlier = DeliveryProgress.from_details(activity.info().heartbeat_details)
        resume = (earlier.chunk if earlier is not None else None) or input.resume
        run = FileDelivery(self.settings, input, resume=resume, beat=activity.heartbeat)
        try:
            result = run.run()
        except CancelledError:
            raise  # Temporal's own (cancel, heartbeat failure, shutdown): never rewrapped
        except (WebhookError, GitError) as error:
            activity.logger.warning(
                "delivery of %s to %s failed after %d files: %s: %s",
                input.repository_id,
                input.app_id,
                run.done,
                error.type,
                error.message,
            )
            raise application_error(error, run.final_progress()) from None
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
            raise ApplicationError(message, run.final_progress(), type=error_type) from None
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
