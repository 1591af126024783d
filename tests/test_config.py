"""Configuration: defaults, validation with one line naming the variable, key handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from treecast.config import SETTINGS, ConfigError, load_settings, resolve_secret_key
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


def test_cipher_round_trips_and_refuses_a_wrong_key() -> None:
    cipher = Cipher(generate_key())
    token = cipher.encrypt("ghp_secret")
    assert "ghp_secret" not in token
    assert cipher.decrypt(token) == "ghp_secret"
    assert cipher.decrypt_list(cipher.encrypt_list(["a", "b"])) == ["a", "b"]
    with pytest.raises(ValueError, match="TREECAST_SECRET_KEY"):
        Cipher(generate_key()).decrypt(token)


def test_configuration_doc_lists_every_setting() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in doc]
    assert missing == []
