"""Temporal workflows: the per-repository sync loop and its detached children."""

from workflows.deliver_files import DeliverFiles
from workflows.notify_breaker import NotifyBreaker
from workflows.sync_repository import SyncRepository

ALL_WORKFLOWS = [SyncRepository, DeliverFiles, NotifyBreaker]

__all__ = ["ALL_WORKFLOWS", "DeliverFiles", "NotifyBreaker", "SyncRepository"]
