"""Every Treecast setting, read once from the environment and validated.

`load_settings()` is the only place that reads `os.environ` for Treecast's own
settings. A bad value raises `ConfigError` with one line naming the variable, so
`worker.py` and `starter.py` can print it and exit without a traceback.

Each setting is one row of the `Settings` class below: the field and its type, the
environment variable, its default, what it means and how it is parsed. `SETTINGS`
is that table, `load_settings` walks it, and the tests hold docs/configuration.md,
docker-compose.yml and .env.example to it. Adding a setting is adding a row (and the
lines those tests then ask for in the docs and the compose files).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_TASK_QUEUE = "treecast"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class _Rejected(ValueError):
    """Raised by a parser to say exactly why; the message is the variable's name + this text."""


# --- parsers: raw text (stripped, never empty) to value; ValueError means "is not <expected>"


def _text(raw: str) -> str:
    return raw


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _host_port(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(raw)
    return raw


def _task_queue(raw: str) -> str:
    if len(raw) > 200:
        raise _Rejected(" is longer than 200 characters")
    return raw


def _fernet_key(raw: str) -> str:
    from treecast.crypto import validate_key

    try:
        validate_key(raw)
    except ValueError:
        raise _Rejected(
            " is not a Fernet key (32 url-safe base64 bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None
    return raw


def _git_config(raw: str) -> str:
    if raw.lower() == "none":
        return ""
    for pair in raw.split(";"):
        key, sep, _value = pair.strip().partition("=")
        if pair.strip() and (
            not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*(\.[^=\s]+)+", key)
        ):
            raise ValueError(raw)
    return raw


def _listen(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(raw)
    return raw


def _secret(raw: str) -> str:
    """An optional shared secret; the error never shows its value."""
    if len(raw) < 16 or any(c.isspace() for c in raw):
        raise _Rejected(
            " must be at least 16 characters without spaces (e.g. `openssl rand -hex 32`)"
        )
    return raw


def _public_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")) or "?" in raw or "#" in raw:
        raise ValueError(raw)
    return raw.rstrip("/")


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def _bounded_float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def _chunk_size(raw: str) -> int:
    value = _bounded_int(1024, 1 << 30)(raw)
    if value % 4:
        raise _Rejected(f"={value} must be a multiple of 4 (base64 quanta)")
    return value


def _http_base_url(raw: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", raw):
        raise ValueError(raw)
    return raw.rstrip("/")


def _database_url(raw: str) -> str:
    if not raw.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")):
        raise ValueError(raw)
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://") :]
    from sqlalchemy.engine import make_url

    try:
        make_url(raw)  # e.g. a port that is not a number
    except Exception:
        raise ValueError("not a URL SQLAlchemy can read") from None
    return raw


# --- the table


# `<data dir>` in a default stands for the value of the field `data_dir`, read before it.
_PLACEHOLDER = re.compile(r"<([a-z][a-z ]*)>")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: its documentation and how its value is read.

    `default` is used when the variable is unset or blank, after its `<field name>`
    placeholders are filled from fields read earlier (`<data dir>`). An `optional`
    setting is None when unset, and its `default` says what happens instead.
    `parse` turns the stripped text into the field's value; a `ValueError` from it
    becomes "NAME='value' is not <expected>".
    """

    name: str
    default: str
    meaning: str
    parse: Callable[[str], Any] = _text
    expected: str = ""
    optional: bool = False
    field: str = ""  # the `Settings` field it fills

    def read(self, env: Mapping[str, str], earlier: Mapping[str, Any]) -> Any:
        """This setting's value in `env`; raise `ConfigError` naming the variable."""
        raw = (env.get(self.name) or "").strip()
        if not raw:
            if self.optional:
                return None
            raw = _PLACEHOLDER.sub(
                lambda match: str(earlier[match.group(1).replace(" ", "_")]), self.default
            )
        try:
            return self.parse(raw)
        except _Rejected as rejected:
            raise ConfigError(f"{self.name}{rejected}") from None
        except (ValueError, TypeError):
            from treecast.redact import redact  # a bad database URL may still hold a password

            expected = self.expected or "valid"
            raise ConfigError(f"{self.name}={redact(raw)!r} is not {expected}") from None


def _setting(
    name: str,
    default: str,
    meaning: str,
    parse: Callable[[str], Any] = _text,
    expected: str = "",
    *,
    optional: bool = False,
    secret: bool = False,
) -> Any:
    """A `Settings` field read from the environment variable `name` (see `Setting`); a
    `secret` one is left out of the settings' repr (and so out of logs)."""
    row = Setting(name, default, meaning, parse, expected, optional)
    return dataclasses.field(metadata={Setting: row}, repr=not secret)


_SECONDS_IN_A_WEEK = "seconds between 1 and 604800"
_KIB_TO_GIB = "a byte count between 1 KiB and 1 GiB"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated settings of one process, one row per environment variable."""

    # fmt: off
    temporal_address: str = _setting(
        "TEMPORAL_ADDRESS", "localhost:7233", "Temporal frontend host:port",
        _host_port, "host:port")
    temporal_namespace: str = _setting(
        "TEMPORAL_NAMESPACE", "default", "Temporal namespace")
    task_queue: str = _setting(
        "TREECAST_TASK_QUEUE", DEFAULT_TASK_QUEUE, "task queue shared by worker and starter",
        _task_queue)
    data_dir: Path = _setting(
        "TREECAST_DATA_DIR", "./.treecast", "git cache, dev-server database, dev key",
        _path, "a directory path")
    database_url: str = _setting(
        "TREECAST_DATABASE_URL", "sqlite:///<data dir>/treecast.db", "SQLite or PostgreSQL URL",
        _database_url, "a sqlite:// or postgresql:// URL")
    secret_key: str | None = _setting(
        "TREECAST_SECRET_KEY", "(generated in dev)", "Fernet key encrypting secrets at rest",
        _fernet_key, optional=True, secret=True)
    dev: bool = _setting(
        "TREECAST_DEV", "0", "dev mode: generate the secret key into the data dir",
        _bool, "a boolean (0/1)")
    allow_private_urls: bool = _setting(
        "TREECAST_ALLOW_PRIVATE_URLS", "0", "allow webhooks to private/loopback addresses",
        _bool, "a boolean (0/1)")
    allow_file_urls: bool = _setting(
        "TREECAST_ALLOW_FILE_URLS", "0", "allow file:// repositories (tests and the demo)",
        _bool, "a boolean (0/1)")
    allow_insecure_transport: bool = _setting(
        "TREECAST_ALLOW_INSECURE_TRANSPORT", "0", "allow a git token over plain http://",
        _bool, "a boolean (0/1)")
    git_config: str = _setting(
        "TREECAST_GIT_CONFIG", "none", "extra git config for every command, key=value;key=value",
        _git_config, "key=value pairs separated by ;")
    tree_max_entries: int = _setting(
        "TREECAST_TREE_MAX_ENTRIES", "5000000", "files a snapshot may list (TreeTooLarge past it)",
        _bounded_int(1, 1 << 40), "a positive integer")
    tree_max_subtree_repeats: int = _setting(
        "TREECAST_TREE_MAX_SUBTREE_REPEATS", "10000", "times one subtree may repeat (tree bombs)",
        _bounded_int(1, 1 << 40), "a positive integer")
    tree_max_path_bytes: int = _setting(
        "TREECAST_TREE_MAX_PATH_BYTES", "4096", "longest path a snapshot may hold",
        _bounded_int(16, 1 << 20), "a byte count between 16 and 1048576")
    tree_max_total_bytes: int = _setting(
        "TREECAST_TREE_MAX_TOTAL_BYTES", "107374182400", "bytes a snapshot's files may add up to",
        _bounded_int(1, 1 << 60), "a positive integer")
    submodule_max_depth: int = _setting(
        "TREECAST_SUBMODULE_MAX_DEPTH", "5", "levels of nested submodules a recursive watch expands",
        _bounded_int(1, 100), "an integer between 1 and 100")
    submodule_max_count: int = _setting(
        "TREECAST_SUBMODULE_MAX_COUNT", "100", "submodules one watch's tree may expand",
        _bounded_int(1, 100_000), "an integer between 1 and 100000")
    lfs_max_bytes: int = _setting(
        "TREECAST_LFS_MAX_BYTES", "2147483648", "largest Git LFS object fetched (held back past it)",
        _bounded_int(1, 1 << 50), "a positive byte count")
    breaker_threshold: int = _setting(
        "TREECAST_BREAKER_THRESHOLD", "5", "consecutive failed syncs that open the breaker",
        _bounded_int(1, 1000), "an integer between 1 and 1000")
    breaker_cooldown_seconds: int = _setting(
        "TREECAST_BREAKER_COOLDOWN_SECONDS", "1800", "how long an open breaker waits",
        _bounded_int(1, 7 * 86400), _SECONDS_IN_A_WEEK)
    poll_interval_seconds: int = _setting(
        "TREECAST_POLL_INTERVAL_SECONDS", "60", "default poll interval of a repository",
        _bounded_int(1, 7 * 86400), _SECONDS_IN_A_WEEK)
    full_sync_seconds: int = _setting(
        "TREECAST_FULL_SYNC_SECONDS", "86400",
        "with remote checks, the longest between two fetches (0 = no checks: fetch every poll)",
        _bounded_int(0, 30 * 86400), "seconds between 0 and 2592000")
    check_shards: int = _setting(
        "TREECAST_CHECK_SHARDS", "1", "remote-check sweeps (one long activity each)",
        _bounded_int(1, 1000), "an integer between 1 and 1000")
    check_concurrency: int = _setting(
        "TREECAST_CHECK_CONCURRENCY", "32", "remote checks one sweep has in flight at once",
        _bounded_int(1, 1000), "an integer between 1 and 1000")
    file_timeout_seconds: float = _setting(
        "TREECAST_FILE_TIMEOUT_SECONDS", "30", "timeout of one file webhook",
        _bounded_float(0.1, 3600), "seconds between 0.1 and 3600")
    notice_timeout_seconds: float = _setting(
        "TREECAST_NOTICE_TIMEOUT_SECONDS", "10", "timeout of a sync_failed/recovered notice",
        _bounded_float(0.1, 3600), "seconds between 0.1 and 3600")
    chunk_threshold_bytes: int = _setting(
        "TREECAST_CHUNK_THRESHOLD_BYTES", "1048576", "encoded size above which files are chunked",
        _bounded_int(1024, 1 << 30), _KIB_TO_GIB)
    chunk_size_bytes: int = _setting(
        "TREECAST_CHUNK_SIZE_BYTES", "524288", "encoded characters per chunk",
        _chunk_size, _KIB_TO_GIB)
    batch_max_files: int = _setting(
        "TREECAST_BATCH_MAX_FILES", "250", "file events per /batch request (apps with batch on)",
        _bounded_int(1, 10_000), "an integer between 1 and 10000")
    batch_max_bytes: int = _setting(
        "TREECAST_BATCH_MAX_BYTES", "4194304", "body bytes per /batch request (one event may exceed)",
        _bounded_int(1024, 1 << 30), _KIB_TO_GIB)
    git_timeout_seconds: float = _setting(
        "TREECAST_GIT_TIMEOUT_SECONDS", "120", "timeout of one git command",
        _bounded_float(0.1, 86400), "seconds between 0.1 and 86400")
    delivery_log_keep: int = _setting(
        "TREECAST_DELIVERY_LOG_KEEP", "1000", "delivery attempts kept per app",
        _bounded_int(1, 10_000_000), "a positive integer")
    activity_concurrency: int = _setting(
        "TREECAST_ACTIVITY_CONCURRENCY", "8", "activities one worker runs at once",
        _bounded_int(1, 1000), "an integer between 1 and 1000")
    workflow_cache_size: int = _setting(
        "TREECAST_WORKFLOW_CACHE_SIZE", "20000",
        "workflows one worker keeps in memory (each beyond replays its history)",
        _bounded_int(0, 1_000_000), "an integer between 0 and 1000000")
    metrics_port: int = _setting(
        "TREECAST_METRICS_PORT", "0", "Prometheus metrics port (0 = off)",
        _bounded_int(0, 65535), "a port number")
    api_listen: str = _setting(
        "TREECAST_API_LISTEN", "127.0.0.1:8000", "host:port the HTTP API listens on",
        _listen, "host:port")
    admin_token: str | None = _setting(
        "TREECAST_ADMIN_TOKEN", "(unset: admin routes answer 503)", "bearer token of the admin API",
        _secret, optional=True, secret=True)
    push_secret: str | None = _setting(
        "TREECAST_PUSH_SECRET", "(unset)", "optional push-hook secret accepted for every repository",
        _secret, optional=True, secret=True)
    api_public_url: str | None = _setting(
        "TREECAST_API_PUBLIC_URL", "(the request's own address)",
        "public base URL of the API for push URLs", _public_url,
        "an http(s):// URL without a query", optional=True)
    api_max_body_bytes: int = _setting(
        "TREECAST_API_MAX_BODY_BYTES", "1048576", "largest API request body",
        _bounded_int(1024, 1 << 30), _KIB_TO_GIB)
    api_max_hook_bytes: int = _setting(
        "TREECAST_API_MAX_HOOK_BYTES", "5242880", "largest push-hook request body",
        _bounded_int(1024, 1 << 30), _KIB_TO_GIB)
    api_rate_per_second: float = _setting(
        "TREECAST_API_RATE_PER_SECOND", "10", "requests per second per token and per client address",
        _bounded_float(0.01, 1e6), "a rate between 0.01 and 1000000")
    api_rate_burst: int = _setting(
        "TREECAST_API_RATE_BURST", "60", "requests a token or address may send at once",
        _bounded_int(1, 10_000_000), "a positive integer")
    api_status_timeout_seconds: float = _setting(
        "TREECAST_API_STATUS_TIMEOUT_SECONDS", "2", "how long the API waits for live workflow status",
        _bounded_float(0.1, 60), "seconds between 0.1 and 60")
    github_api_url: str = _setting(
        "TREECAST_GITHUB_API_URL", "https://api.github.com",
        "GitHub API that mints GitHub App tokens (Enterprise: https://HOST/api/v3)",
        _http_base_url, "an http(s):// URL")
    temporal_ui_url: str = _setting(
        "TREECAST_TEMPORAL_UI_URL", "http://localhost:8233", "Temporal Web UI the admin page links to",
        _public_url, "an http(s):// URL without a query")
    admin_session_seconds: int = _setting(
        "TREECAST_ADMIN_SESSION_SECONDS", "28800", "how long an admin page login lasts",
        _bounded_int(60, 7 * 86400), "seconds between 60 and 604800")
    # fmt: on

    def git_config_pairs(self) -> list[tuple[str, str]]:
        """`TREECAST_GIT_CONFIG` as (key, value) pairs, applied to every git command."""
        pairs = []
        for pair in self.git_config.split(";"):
            key, _, value = pair.strip().partition("=")
            if key:
                pairs.append((key.strip(), value.strip()))
        return pairs

    @property
    def git_cache_dir(self) -> Path:
        """Where the worker keeps one bare repository per repository id."""
        return self.data_dir / "git"

    @property
    def secret_key_file(self) -> Path:
        """Where dev mode keeps its generated key."""
        return self.data_dir / "secret.key"


# Every setting in the order of the fields (which is the order they are read and documented in).
SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(field.metadata[Setting], field=field.name)
    for field in dataclasses.fields(Settings)
)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise `ConfigError` naming the first bad variable."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.field] = setting.read(env, values)
    return Settings(**values)


def resolve_secret_key(settings: Settings) -> str:
    """The key that encrypts secrets at rest.

    `TREECAST_SECRET_KEY` wins. Otherwise a key generated earlier into the data
    dir is used, and in dev mode one is generated there on first use. Outside dev
    mode a missing key is a `ConfigError`: a production key must be managed.
    Processes starting together on a fresh data dir all end up with the same key.
    """
    if settings.secret_key:
        return settings.secret_key
    path = settings.secret_key_file
    if path.exists():
        return _read_key_file(path)
    if not settings.dev:
        raise ConfigError(
            "TREECAST_SECRET_KEY is not set (required outside dev mode; set TREECAST_DEV=1 to generate one)"
        )
    return _create_key_file(path)


def _read_key_file(path: Path) -> str:
    from treecast.crypto import validate_key

    key = path.read_text().strip()
    try:
        validate_key(key)
    except ValueError:
        raise ConfigError(
            f"{path} does not hold a valid Fernet key; delete it or set TREECAST_SECRET_KEY"
        ) from None
    return key


def _create_key_file(path: Path) -> str:
    """Write a new key to `path`, or return the key another process put there first.

    The key is written whole to a temp file beside `path` and hard-linked into
    place: the link either appears with the complete key or fails with EEXIST, so
    no process ever reads a half-written file, and the losers of the race read
    the winner's key. Creating `path` directly (O_EXCL) left a window in which it
    existed but was still empty.
    """
    from treecast.crypto import generate_key

    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read_key_file(path)
    finally:
        os.unlink(temp)
    return key
