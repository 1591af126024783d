"""TREECAST_LOG_FORMAT=json: one JSON object per line with time, level, logger, message and
the ids a record knows (its own, Temporal's, or named in a workflow id or the message)."""

from __future__ import annotations

import json
import logging
import sys

from treecast.logs import JsonFormatter, record_ids

REPO = "repo_" + "a" * 24
APP = "app_" + "b" * 24


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("treecast.test", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_a_record_is_one_json_line_with_its_ids() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failing = record("delivery to %s failed", exc_info=sys.exc_info())
    failing.args = (APP,)
    failing.__dict__["temporal_activity"] = {
        "workflow_id": f"deliver/{REPO}",
        "activity_type": "deliver_changes",
        "attempt": 2,
    }
    line = JsonFormatter().format(failing)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING" and parsed["logger"] == "treecast.test"
    assert parsed["message"] == f"delivery to {APP} failed"
    assert parsed["time"].endswith("+00:00")
    assert parsed["workflow_id"] == f"deliver/{REPO}" and parsed["repository_id"] == REPO
    assert parsed["app_id"] == APP and parsed["activity_type"] == "deliver_changes"
    assert "ValueError: boom" in parsed["exception"]


def test_explicit_ids_win_and_a_plain_record_has_none() -> None:
    given = record("started", repository_id="repo_given", job_id="j1")
    assert record_ids(given) == {"repository_id": "repo_given", "job_id": "j1"}
    assert record_ids(record("nothing to say")) == {}
