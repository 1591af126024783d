"""How the worker and the API write their log: text lines, or with TREECAST_LOG_FORMAT=json
one JSON object per line (time, level, logger, message and the ids the record knows)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Ids a record carries (`log.info(..., extra={"repository_id": ...})`); Temporal's workflow
# and activity loggers attach theirs as `temporal_workflow` / `temporal_activity`.
ID_FIELDS = ("repository_id", "app_id", "workflow_id", "job_id")
_REPOSITORY_ID = re.compile(r"\brepo_[0-9a-f]{24}\b")
_APP_ID = re.compile(r"\bapp_[0-9a-f]{24}\b")


def record_ids(record: logging.LogRecord) -> dict[str, str]:
    """The repository, app, workflow (and bulk job) ids of a record, where known.

    Besides the explicit ones, a workflow id names its repository
    (`sync-repository/repo_...`), and an activity's or delivery's message names its app.
    """
    found = {key: str(value) for key in ID_FIELDS if (value := getattr(record, key, None))}
    for attribute in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, attribute, None)
        if isinstance(details, dict):
            if details.get("workflow_id"):
                found.setdefault("workflow_id", str(details["workflow_id"]))
            for key in ("workflow_type", "activity_type", "run_id", "attempt"):
                if details.get(key) is not None:
                    found.setdefault(key, str(details[key]))
    message = record.getMessage()
    for key, pattern, where in (
        ("repository_id", _REPOSITORY_ID, found.get("workflow_id", "") + " " + message),
        ("app_id", _APP_ID, message),
    ):
        if key not in found and (match := pattern.search(where)):
            found[key] = match.group(0)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_ids(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr in `log_format` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if log_format == "json":
        # Temporal's loggers append their details to the message; as JSON they are fields.
        from temporalio import activity, workflow

        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
