"""Treecast's own Prometheus metrics, exported beside Temporal's through the worker's runtime.

Activities use `current()` (installed once by `worker.py`; a no-op meter
otherwise, e.g. in unit tests). Workflows count through `workflow.metric_meter()`
instead, which skips counting while a history is replayed (see `_count` in
`workflows/sync_repository.py`).
"""

from __future__ import annotations

from temporalio.common import MetricMeter


class TreecastMetrics:
    """The instruments activities record into."""

    def __init__(self, meter: MetricMeter) -> None:
        self.webhook_requests = meter.create_counter(
            "treecast_webhook_requests",
            "Webhook requests by event and outcome (ok or an error type)",
        )
        self.webhook_duration = meter.create_histogram_float(
            "treecast_webhook_request_duration", "Time from sending a webhook to its answer", "ms"
        )
        self.files_delivered = meter.create_counter(
            "treecast_files_delivered",
            "Files an app acknowledged, by event (create, update, delete)",
        )
        self.bytes_delivered = meter.create_counter(
            "treecast_webhook_bytes", "Request body bytes acknowledged by apps", "bytes"
        )


_current = TreecastMetrics(MetricMeter.noop)


def install(meter: MetricMeter) -> None:
    """Record into `meter` from now on (the worker's runtime meter)."""
    global _current
    _current = TreecastMetrics(meter)


def current() -> TreecastMetrics:
    """The instruments to record into."""
    return _current


def record_webhook(event: str, outcome: str, duration_ms: float, body_bytes: int) -> None:
    """One webhook request and its answer (outcome: "ok" or an error type)."""
    metrics = current()
    attributes = {"event": event, "outcome": outcome}
    metrics.webhook_requests.with_additional_attributes(attributes).add(1)
    metrics.webhook_duration.with_additional_attributes(attributes).record(duration_ms)
    if outcome == "ok":
        metrics.bytes_delivered.with_additional_attributes({"event": event}).add(body_bytes)
