"""`starter.py app add --batch` and `app set-batch APP_ID on|off`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import starter
from tests.support.cli import run


def batch_of(data: Path, app_id: str) -> int:
    with sqlite3.connect(data / "treecast.db") as conn:
        (value,) = conn.execute("select batch from apps where id = ?", (app_id,)).fetchone()
        return int(value)


def test_batch_on_at_add_and_switched_later(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, added, _ = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com/h")
    assert code == 0 and added["batch"] is False
    plain = added["app_id"]
    assert batch_of(cli_env, plain) == 0

    code, added, _ = run(
        capsys, "app", "add", "--name", "b", "--url", "https://example.com/h", "--batch"
    )
    assert code == 0 and added["batch"] is True
    assert batch_of(cli_env, added["app_id"]) == 1

    code, out, _ = run(capsys, "app", "set-batch", plain, "on")
    assert (code, out) == (0, {"app_id": plain, "batch": True})
    assert batch_of(cli_env, plain) == 1
    code, out, _ = run(capsys, "app", "set-batch", plain, "off")
    assert (code, out) == (0, {"app_id": plain, "batch": False})
    assert batch_of(cli_env, plain) == 0

    code = starter.main(["app", "set-batch", plain, "on"])
    text, _ = capsys.readouterr()
    assert code == 0 and text.strip() == f"app {plain}: batch delivery on"


def test_set_batch_refuses_unknown_apps_and_states(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "app", "set-batch", "app_" + "0" * 24, "on")
    assert code == 2 and err.strip()
    code, _, err = run(capsys, "app", "set-batch", "app_" + "0" * 24, "maybe")
    assert (code == 2 and "on|off" in err) or "invalid choice" in err
