"""Configuration: defaults, validation with one line naming the variable, key handling."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
from annotated_types import Ge, Le, MultipleOf

from treecast.config import (
    SETTINGS,
    ConfigError,
    Setting,
    Settings,
    load_settings,
    resolve_secret_key,
)
from treecast.crypto import Cipher, generate_key


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    settings = load_settings({"TREECAST_DATA_DIR": str(tmp_path)})
    assert settings.temporal_address == "localhost:7233"
    assert settings.temporal_namespace == "default"
    assert settings.database_url == f"sqlite:///{tmp_path}/treecast.db"
    assert (settings.breaker_threshold, settings.breaker_cooldown_seconds) == (5, 1800)
    assert settings.poll_interval_seconds == 60
    assert (settings.file_timeout_seconds, settings.notice_timeout_seconds) == (30, 10)
    assert (settings.chunk_threshold_bytes, settings.chunk_size_bytes) == (1048576, 524288)
    assert settings.allow_private_urls is False
    documented = {s.name for s in SETTINGS}
    assert {"TEMPORAL_ADDRESS", "TREECAST_DATABASE_URL", "TREECAST_SECRET_KEY"} <= documented


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TEMPORAL_ADDRESS", "no-port"),
        ("TREECAST_DATABASE_URL", "mysql://x/y"),
        ("TREECAST_DATABASE_URL", "postgresql://u@h:notaport/db"),
        ("TREECAST_BREAKER_THRESHOLD", "0"),
        ("TREECAST_BREAKER_THRESHOLD", "five"),
        ("TREECAST_BREAKER_COOLDOWN_SECONDS", "-1"),
        ("TREECAST_POLL_INTERVAL_SECONDS", "99999999"),
        ("TREECAST_FILE_TIMEOUT_SECONDS", "abc"),
        ("TREECAST_ALLOW_PRIVATE_URLS", "maybe"),
        ("TREECAST_CHUNK_SIZE_BYTES", "1025"),
        ("TREECAST_SECRET_KEY", "not-a-key"),
        ("TREECAST_METRICS_PORT", "70000"),
        ("TREECAST_DATA_DIR", "a\x00b"),  # was a traceback from Path.resolve
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"TREECAST_DATA_DIR": str(tmp_path), name: value})
    message = str(raised.value)
    assert name in message
    assert "\n" not in message


def test_a_bad_database_url_is_shown_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {"TREECAST_DATA_DIR": str(tmp_path), "TREECAST_DATABASE_URL": "mysql://u:hunter2@h/x"}
        )
    assert "hunter2" not in str(raised.value)
    assert "mysql://***@h/x" in str(raised.value)


def test_postgres_urls_use_psycopg(tmp_path: Path) -> None:
    settings = load_settings({"TREECAST_DATABASE_URL": "postgres://u@h/db"})
    assert settings.database_url == "postgresql+psycopg://u@h/db"


def test_secret_key_is_required_outside_dev_and_generated_in_dev(tmp_path: Path) -> None:
    env = {"TREECAST_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="TREECAST_SECRET_KEY"):
        resolve_secret_key(load_settings(env))
    dev = load_settings({**env, "TREECAST_DEV": "1"})
    key = resolve_secret_key(dev)
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    # the generated key is reused, also outside dev mode, so data stays readable
    assert resolve_secret_key(load_settings(env)) == key
    explicit = generate_key()
    assert resolve_secret_key(load_settings({**env, "TREECAST_SECRET_KEY": explicit})) == explicit


# One process: read the settings, say it is ready, block on stdin until the test releases
# every process at once, then resolve the key and print it.
_RESOLVE_KEY = (
    "import sys\n"
    "from treecast.config import load_settings, resolve_secret_key\n"
    "settings = load_settings()\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
    "print(resolve_secret_key(settings))\n"
)


@pytest.mark.slow  # 18 interpreters: in `make test`, not `make unit`
@pytest.mark.parametrize("attempt", range(3))
def test_processes_starting_at_once_on_a_fresh_data_dir_share_one_generated_key(
    tmp_path: Path, attempt: int
) -> None:
    # Six processes (a worker, starters, a demo) starting together used to race:
    # O_EXCL made the losers die with FileExistsError, or read the winner's file
    # before its key was in it.
    env = {**os.environ, "TREECAST_DATA_DIR": str(tmp_path / "data"), "TREECAST_DEV": "1"}
    env.pop("TREECAST_SECRET_KEY", None)
    root = Path(__file__).resolve().parents[2]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RESOLVE_KEY],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()  # all six go at once
        results = []
        for process in processes:
            assert process.stdout is not None and process.stderr is not None
            key, errors = process.stdout.read().strip(), process.stderr.read()
            results.append((process.wait(timeout=60), key, errors))
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert [errors for code, _, errors in results if code != 0] == []
    keys = {key for _, key, _ in results}
    assert len(keys) == 1
    path = tmp_path / "data" / "secret.key"
    assert path.read_text() == f"{keys.pop()}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [child.name for child in path.parent.iterdir()] == ["secret.key"]  # no temp file left


def test_cipher_round_trips_and_refuses_a_wrong_key() -> None:
    cipher = Cipher(generate_key())
    token = cipher.encrypt("ghp_secret")
    assert "ghp_secret" not in token
    assert cipher.decrypt(token) == "ghp_secret"
    assert cipher.decrypt_list(cipher.encrypt_list(["a", "b"])) == ["a", "b"]
    with pytest.raises(ValueError, match="TREECAST_SECRET_KEY"):
        Cipher(generate_key()).decrypt(token)


DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
DOC_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| `([^`]*)` \| (.*) \|$", re.MULTILINE)


def doc_row(setting: Setting) -> str:
    return f"| `{setting.name}` | `{setting.default}` | {setting.meaning} |"


def test_configuration_doc_has_one_row_per_setting_with_its_default() -> None:
    documented = DOC_ROW.findall(DOC.read_text())
    expected = [(s.name, s.default, s.meaning) for s in SETTINGS]
    # On a mismatch, the table the doc should have (in the order of the Settings fields):
    table = "\n".join(doc_row(s) for s in SETTINGS)
    assert documented == expected, f"docs/configuration.md's table should read:\n{table}"


def test_configuration_doc_names_no_setting_that_does_not_exist() -> None:
    mentioned = set(re.findall(r"\bTREECAST_[A-Z0-9_]+\b", DOC.read_text()))
    assert mentioned - {s.name for s in SETTINGS} == set()


def test_every_settings_field_is_one_row_of_the_table() -> None:
    assert [s.field for s in SETTINGS] == list(Settings.model_fields)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    assert all(s.meaning and s.default for s in SETTINGS)
    # Each default parses to the field's declared type.
    hints = get_type_hints(Settings)
    settings = load_settings({})
    for s in SETTINGS:
        value, hint = getattr(settings, s.field), hints[s.field]
        if get_origin(hint) is Literal:
            assert value in get_args(hint), s.name
        else:
            assert isinstance(value, hint), s.name


def test_a_setting_read_from_a_row_is_stripped_and_blank_means_the_default(
    tmp_path: Path,
) -> None:
    env = {"TREECAST_DATA_DIR": f"  {tmp_path}  ", "TREECAST_BREAKER_THRESHOLD": " 7 "}
    settings = load_settings({**env, "TEMPORAL_NAMESPACE": "   ", "TREECAST_SECRET_KEY": ""})
    assert settings.data_dir == tmp_path and settings.breaker_threshold == 7
    assert settings.temporal_namespace == "default" and settings.secret_key is None


def _bounds(setting: Setting) -> tuple[Any, Any] | None:
    metadata = Settings.model_fields[setting.field].metadata
    low = [m.ge for m in metadata if isinstance(m, Ge)]
    high = [m.le for m in metadata if isinstance(m, Le)]
    return (low[0], high[0]) if low and high else None


_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _said(expected: str) -> tuple[float, float] | None:
    """The bounds an error's words name ("... between 1 KiB and 1 GiB"), if any."""
    found = re.search(r"between ([\d.]+)( [KMG]iB)? and ([\d.]+)( [KMG]iB)?$", expected)
    if found is None:
        return None
    low, low_unit, high, high_unit = found.groups()
    scale = [_UNITS[unit.strip()] if unit else 1 for unit in (low_unit, high_unit)]
    return float(low) * scale[0], float(high) * scale[1]


@pytest.mark.parametrize("setting", [s for s in SETTINGS if _bounds(s)], ids=lambda s: s.name)
def test_each_bound_is_checked_and_named_as_written_once(setting: Setting) -> None:
    # The bounds are the field's constraints only; the error's words come from them.
    bounds = _bounds(setting)
    assert bounds is not None
    info = Settings.model_fields[setting.field]
    integer = info.annotation is int
    step = next((m.multiple_of for m in info.metadata if isinstance(m, MultipleOf)), 1)
    below, above = bounds[0] - (step if integer else 0.001), bounds[1] + step
    for edge, outside in ((bounds[0], below), (bounds[1], above)):
        assert getattr(load_settings({setting.name: str(edge)}), setting.field) == edge
        with pytest.raises(ConfigError) as raised:
            load_settings({setting.name: str(outside)})
        assert str(raised.value).endswith(f"is not {setting.expected}")
    said = _said(setting.expected)
    assert said is None or said == (float(bounds[0]), float(bounds[1])), setting.expected
    assert said is not None or setting.expected in ("a positive integer", "a port number")


def test_settings_objects_take_values_and_only_load_settings_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TREECAST_BREAKER_THRESHOLD", "7")
    assert Settings().breaker_threshold == 5
    assert load_settings().breaker_threshold == 7
    assert load_settings({}).breaker_threshold == 5
    changed = Settings().model_copy(update={"breaker_threshold": 9})
    assert changed.breaker_threshold == 9 and changed != Settings()


def test_secrets_stay_out_of_the_repr_and_of_errors(tmp_path: Path) -> None:
    key, token = generate_key(), "t0ken-" + "x" * 20
    settings = load_settings(
        {"TREECAST_SECRET_KEY": key, "TREECAST_ADMIN_TOKEN": token, "TREECAST_PUSH_SECRET": token}
    )
    assert key not in repr(settings) and token not in repr(settings)
    for name, value in (("TREECAST_SECRET_KEY", key[:-2]), ("TREECAST_ADMIN_TOKEN", "short-t0ken")):
        with pytest.raises(ConfigError) as raised:
            load_settings({name: value})
        assert value not in str(raised.value) and name in str(raised.value)
    with pytest.raises(ValueError) as direct:
        Settings(admin_token="short-t0ken")
    assert "short-t0ken" not in str(direct.value)
