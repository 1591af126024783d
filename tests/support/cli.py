"""The command line in this test's process: `cli_env` (a fixture for every test, from
conftest.py) sets up its settings, `run` and `invoke` call it, `dump_db` reads what it wrote."""

from __future__ import annotations

import json
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

import starter
from treecast.crypto import generate_key


def invoke(argv: list[str]) -> tuple[int, Any, str]:
    """`starter.py --json ARGV`: its exit status, what it printed (parsed; None when
    nothing) and its stderr."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = starter.main(["--json", *argv])
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command line's settings: its own data dir (returned) and key, Temporal where
    nothing listens."""
    from tests.conftest import free_port  # conftest imports this module

    data = tmp_path / "data"
    monkeypatch.setenv("TREECAST_DATA_DIR", str(data))
    monkeypatch.setenv("TREECAST_SECRET_KEY", generate_key())
    monkeypatch.setenv("TREECAST_ALLOW_PRIVATE_URLS", "0")
    monkeypatch.setenv("TREECAST_ALLOW_FILE_URLS", "1")  # the tests' remotes are local
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = starter.main(["--json", *argv] if "--json" not in argv else list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def dump_db(data: Path) -> list[tuple[Any, ...]]:
    db = data / "treecast.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows: list[tuple[Any, ...]] = []
        for (table,) in conn.execute(
            # Not the schema's revision, which a fresh database gets with its tables.
            "select name from sqlite_master where type='table' and name != 'alembic_version'"
            " order by name"
        ):
            rows += [(table, *row) for row in conn.execute(f"select * from {table}")]
        return rows
