"""`treecast manifest`, `reconcile` and `sync-completed` (starter.py), without Temporal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import starter
from tests.api.test_mirrors_api import FILES, World, delivered, drifted, make_world
from tests.conftest import free_port
from treecast.config import load_settings
from treecast.crypto import generate_key
from treecast.delivery.digest import git_blob_id, tree_digest


@pytest.fixture
def world_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("TREECAST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TREECAST_SECRET_KEY", generate_key())
    monkeypatch.setenv("TREECAST_ALLOW_FILE_URLS", "1")
    monkeypatch.setenv("TREECAST_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    return make_world(tmp_path, load_settings())


def test_manifest_prints_every_file_and_the_digest(
    world_env: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world = world_env
    assert starter.main(["manifest", world.app_id, world.repository_id]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = delivered(FILES)
    digest = tree_digest((p, git_blob_id(c)) for p, c in expected.items())
    assert [line.split()[-1] for line in out[:-1]] == sorted(expected)
    assert out[-1].endswith(f"tree digest {digest}")
    assert starter.main(["manifest", world.app_id, world.repository_id, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tree_digest"] == digest and len(document["entries"]) == len(expected)
    assert starter.main(["manifest", world.app_id, world.repository_id, "--commit", "0" * 40]) == 2
    assert "was not synced" in capsys.readouterr().err


def test_reconcile_from_a_file_sorts_it_and_says_what_differs(
    world_env: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = world_env
    held = tmp_path / "HELD.jsonl"
    lines = world.held(drifted(delivered(FILES))).splitlines()
    held.write_bytes(b"\n".join(reversed(lines)) + b"\n")  # any order: the CLI sorts
    code = starter.main(
        ["reconcile", world.app_id, world.repository_id, "--from-file", str(held), "--dry-run"]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == "3 files differ (1 missing, 1 changed, 1 extra)"
    good = tree_digest((p, git_blob_id(c)) for p, c in delivered(FILES).items())
    argv = ["reconcile", world.app_id, world.repository_id, "--digest", good, "--json"]
    assert starter.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "in sync"
    held.write_text('{"path": "../x", "blob_id": "' + "0" * 40 + '"}\n')
    argv = ["reconcile", world.app_id, world.repository_id, "--from-file", str(held)]
    assert starter.main(argv) == 2
    assert "'..'" in capsys.readouterr().err
    assert starter.main([*argv[:3], "--from-file", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_sync_completed_on_and_off(world_env: World, capsys: pytest.CaptureFixture[str]) -> None:
    world = world_env
    assert starter.main(["sync-completed", world.app_id, "on"]) == 0
    assert "sync_completed on" in capsys.readouterr().out
    assert starter.main(["sync-completed", "app_nope", "off"]) == 2
