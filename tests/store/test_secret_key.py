"""A database belongs to one secret key: another key is one line naming it, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import dump_db, run
from treecast.crypto import generate_key


def test_a_wrong_key_is_one_line_and_writes_nothing(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, added, _ = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com/h")
    assert code == 0
    before = dump_db(cli_env)
    monkeypatch.setenv("TREECAST_SECRET_KEY", generate_key())
    for argv in (
        ["app", "rotate-secret", added["app_id"]],  # printed a traceback, exit 1
        ["app", "add", "--name", "b", "--url", "https://example.com/b"],  # mixed two keys
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out is None, err
        assert len(err.strip().splitlines()) == 1 and "TREECAST_SECRET_KEY" in err
        assert "Traceback" not in err
    assert dump_db(cli_env) == before


def test_names_from_input_are_refused_or_printed_escaped(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A name that would retitle and clear the terminal, and forge a second line.
    name = "evil\x1b]0;title\x07\x1b[2J\nfake line"
    code, _, err = run(capsys, "app", "add", "--name", name, "--url", "https://example.com/h")
    assert code == 2 and "control characters" in err
    # One stored before names were checked is still printed harmlessly.
    import starter
    from models.tables import App
    from treecast.config import load_settings
    from treecast.db import session_scope

    with session_scope(load_settings().database_url) as session:
        session.add(
            App(id="app_" + "0" * 24, name=name, base_url="https://x", secrets_encrypted="-")
        )
    assert starter.main(["app", "list"]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed
    assert len(printed.strip().splitlines()) == 1 and "\\x1b]0;title" in printed
