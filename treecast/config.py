"""Every Treecast setting, read once from the environment and validated.

`load_settings()` is the only place that reads `os.environ` for Treecast's own
settings. A bad value raises `ConfigError` with one line naming the variable, so
`worker.py` and `starter.py` can print it and exit without a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

DEFAULT_TASK_QUEUE = "treecast"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One documented environment variable (used by docs/configuration.md and `--help`)."""

    name: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("TEMPORAL_ADDRESS", "localhost:7233", "Temporal frontend host:port"),
    Setting("TEMPORAL_NAMESPACE", "default", "Temporal namespace"),
    Setting("TREECAST_TASK_QUEUE", DEFAULT_TASK_QUEUE, "task queue shared by worker and starter"),
    Setting("TREECAST_DATA_DIR", "./.treecast", "git cache, dev-server database, dev key"),
    Setting(
        "TREECAST_DATABASE_URL", "sqlite:///<data dir>/treecast.db", "SQLite or PostgreSQL URL"
    ),
    Setting("TREECAST_SECRET_KEY", "(generated in dev)", "Fernet key encrypting secrets at rest"),
    Setting("TREECAST_DEV", "0", "dev mode: generate the secret key into the data dir"),
    Setting("TREECAST_ALLOW_PRIVATE_URLS", "0", "allow webhooks to private/loopback addresses"),
    Setting("TREECAST_BREAKER_THRESHOLD", "5", "consecutive failed syncs that open the breaker"),
    Setting("TREECAST_BREAKER_COOLDOWN_SECONDS", "1800", "how long an open breaker waits"),
    Setting("TREECAST_POLL_INTERVAL_SECONDS", "60", "default poll interval of a repository"),
    Setting("TREECAST_FILE_TIMEOUT_SECONDS", "30", "timeout of one file webhook"),
    Setting("TREECAST_NOTICE_TIMEOUT_SECONDS", "10", "timeout of a sync_failed/recovered notice"),
    Setting(
        "TREECAST_CHUNK_THRESHOLD_BYTES", "1048576", "encoded size above which files are chunked"
    ),
    Setting("TREECAST_CHUNK_SIZE_BYTES", "524288", "encoded characters per chunk"),
    Setting("TREECAST_GIT_TIMEOUT_SECONDS", "120", "timeout of one git command"),
    Setting("TREECAST_DELIVERY_LOG_KEEP", "1000", "delivery attempts kept per app"),
    Setting("TREECAST_ACTIVITY_CONCURRENCY", "8", "activities one worker runs at once"),
    Setting("TREECAST_METRICS_PORT", "0", "Prometheus metrics port (0 = off)"),
    Setting("TREECAST_API_LISTEN", "127.0.0.1:8000", "host:port the HTTP API listens on"),
    Setting(
        "TREECAST_ADMIN_TOKEN", "", "bearer token of the admin API (unset: admin routes answer 503)"
    ),
    Setting("TREECAST_PUSH_SECRET", "", "optional push-hook secret accepted for every repository"),
    Setting(
        "TREECAST_API_PUBLIC_URL",
        "",
        "public base URL of the API for push URLs (default: the request's)",
    ),
    Setting("TREECAST_API_MAX_BODY_BYTES", "1048576", "largest API request body"),
    Setting("TREECAST_API_MAX_HOOK_BYTES", "5242880", "largest push-hook request body"),
    Setting(
        "TREECAST_API_RATE_PER_SECOND", "10", "requests per second per token and per client address"
    ),
    Setting("TREECAST_API_RATE_BURST", "60", "requests a token or address may send at once"),
    Setting(
        "TREECAST_API_STATUS_TIMEOUT_SECONDS",
        "2",
        "how long the API waits for live workflow status",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The validated settings of one process."""

    temporal_address: str
    temporal_namespace: str
    task_queue: str
    data_dir: Path
    database_url: str
    secret_key: str | None
    dev: bool
    allow_private_urls: bool
    breaker_threshold: int
    breaker_cooldown_seconds: int
    poll_interval_seconds: int
    file_timeout_seconds: float
    notice_timeout_seconds: float
    chunk_threshold_bytes: int
    chunk_size_bytes: int
    git_timeout_seconds: float
    delivery_log_keep: int
    activity_concurrency: int
    metrics_port: int
    api_listen: str = "127.0.0.1:8000"
    admin_token: str | None = field(default=None, repr=False)
    push_secret: str | None = field(default=None, repr=False)
    api_public_url: str = ""
    api_max_body_bytes: int = 1 << 20
    api_max_hook_bytes: int = 5 << 20
    api_rate_per_second: float = 10.0
    api_rate_burst: int = 60
    api_status_timeout_seconds: float = 2.0

    @property
    def git_cache_dir(self) -> Path:
        """Where the worker keeps one bare repository per repository id."""
        return self.data_dir / "git"

    @property
    def secret_key_file(self) -> Path:
        """Where dev mode keeps its generated key."""
        return self.data_dir / "secret.key"


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _parse(
    env: Mapping[str, str], name: str, default: str, parse: Callable[[str], T], what: str
) -> T:
    raw = _get(env, name, default)
    try:
        return parse(raw)
    except (ValueError, TypeError):
        from treecast.redact import redact  # a bad database URL may still hold a password

        raise ConfigError(f"{name}={redact(raw)!r} is not {what}") from None


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


def _listen(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(raw)
    return raw


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """An optional secret setting; the error never shows its value."""
    raw = _get(env, name, "")
    if raw and (len(raw) < 16 or any(c.isspace() for c in raw)):
        raise ConfigError(
            f"{name} must be at least 16 characters without spaces (e.g. `openssl rand -hex 32`)"
        )
    return raw or None


def _public_url(raw: str) -> str:
    if raw and (not raw.startswith(("http://", "https://")) or "?" in raw or "#" in raw):
        raise ValueError(raw)
    return raw.rstrip("/")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise `ConfigError` naming the first bad variable."""
    env = os.environ if env is None else env
    data_dir = Path(_get(env, "TREECAST_DATA_DIR", "./.treecast")).expanduser().resolve()
    default_db = f"sqlite:///{data_dir / 'treecast.db'}"
    task_queue = _get(env, "TREECAST_TASK_QUEUE", DEFAULT_TASK_QUEUE)
    if len(task_queue) > 200:
        raise ConfigError("TREECAST_TASK_QUEUE is longer than 200 characters")
    address = _get(env, "TEMPORAL_ADDRESS", "localhost:7233")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"TEMPORAL_ADDRESS={address!r} is not host:port")
    secret_key = _get(env, "TREECAST_SECRET_KEY", "") or None
    if secret_key is not None:
        from treecast.crypto import validate_key

        try:
            validate_key(secret_key)
        except ValueError:
            raise ConfigError(
                "TREECAST_SECRET_KEY is not a Fernet key (32 url-safe base64 bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None
    chunk_threshold = _parse(
        env,
        "TREECAST_CHUNK_THRESHOLD_BYTES",
        "1048576",
        _bounded_int(1024, 1 << 30),
        "a byte count between 1 KiB and 1 GiB",
    )
    chunk_size = _parse(
        env,
        "TREECAST_CHUNK_SIZE_BYTES",
        "524288",
        _bounded_int(1024, 1 << 30),
        "a byte count between 1 KiB and 1 GiB",
    )
    if chunk_size % 4:
        raise ConfigError(
            f"TREECAST_CHUNK_SIZE_BYTES={chunk_size} must be a multiple of 4 (base64 quanta)"
        )
    return Settings(
        temporal_address=address,
        temporal_namespace=_get(env, "TEMPORAL_NAMESPACE", "default"),
        task_queue=task_queue,
        data_dir=data_dir,
        database_url=_parse(
            env,
            "TREECAST_DATABASE_URL",
            default_db,
            _database_url,
            "a sqlite:// or postgresql:// URL",
        ),
        secret_key=secret_key,
        dev=_parse(env, "TREECAST_DEV", "0", _bool, "a boolean (0/1)"),
        allow_private_urls=_parse(
            env, "TREECAST_ALLOW_PRIVATE_URLS", "0", _bool, "a boolean (0/1)"
        ),
        breaker_threshold=_parse(
            env,
            "TREECAST_BREAKER_THRESHOLD",
            "5",
            _bounded_int(1, 1000),
            "an integer between 1 and 1000",
        ),
        breaker_cooldown_seconds=_parse(
            env,
            "TREECAST_BREAKER_COOLDOWN_SECONDS",
            "1800",
            _bounded_int(1, 7 * 86400),
            "seconds between 1 and 604800",
        ),
        poll_interval_seconds=_parse(
            env,
            "TREECAST_POLL_INTERVAL_SECONDS",
            "60",
            _bounded_int(1, 7 * 86400),
            "seconds between 1 and 604800",
        ),
        file_timeout_seconds=_parse(
            env,
            "TREECAST_FILE_TIMEOUT_SECONDS",
            "30",
            _bounded_float(0.1, 3600),
            "seconds between 0.1 and 3600",
        ),
        notice_timeout_seconds=_parse(
            env,
            "TREECAST_NOTICE_TIMEOUT_SECONDS",
            "10",
            _bounded_float(0.1, 3600),
            "seconds between 0.1 and 3600",
        ),
        chunk_threshold_bytes=chunk_threshold,
        chunk_size_bytes=chunk_size,
        git_timeout_seconds=_parse(
            env,
            "TREECAST_GIT_TIMEOUT_SECONDS",
            "120",
            _bounded_float(0.1, 86400),
            "seconds between 0.1 and 86400",
        ),
        delivery_log_keep=_parse(
            env,
            "TREECAST_DELIVERY_LOG_KEEP",
            "1000",
            _bounded_int(1, 10_000_000),
            "a positive integer",
        ),
        activity_concurrency=_parse(
            env,
            "TREECAST_ACTIVITY_CONCURRENCY",
            "8",
            _bounded_int(1, 1000),
            "an integer between 1 and 1000",
        ),
        metrics_port=_parse(
            env, "TREECAST_METRICS_PORT", "0", _bounded_int(0, 65535), "a port number"
        ),
        api_listen=_parse(env, "TREECAST_API_LISTEN", "127.0.0.1:8000", _listen, "host:port"),
        admin_token=_secret(env, "TREECAST_ADMIN_TOKEN"),
        push_secret=_secret(env, "TREECAST_PUSH_SECRET"),
        api_public_url=_parse(
            env, "TREECAST_API_PUBLIC_URL", "", _public_url, "an http(s):// URL without a query"
        ),
        api_max_body_bytes=_parse(
            env,
            "TREECAST_API_MAX_BODY_BYTES",
            "1048576",
            _bounded_int(1024, 1 << 30),
            "a byte count between 1 KiB and 1 GiB",
        ),
        api_max_hook_bytes=_parse(
            env,
            "TREECAST_API_MAX_HOOK_BYTES",
            "5242880",
            _bounded_int(1024, 1 << 30),
            "a byte count between 1 KiB and 1 GiB",
        ),
        api_rate_per_second=_parse(
            env,
            "TREECAST_API_RATE_PER_SECOND",
            "10",
            _bounded_float(0.01, 1e6),
            "a rate between 0.01 and 1000000",
        ),
        api_rate_burst=_parse(
            env, "TREECAST_API_RATE_BURST", "60", _bounded_int(1, 10_000_000), "a positive integer"
        ),
        api_status_timeout_seconds=_parse(
            env,
            "TREECAST_API_STATUS_TIMEOUT_SECONDS",
            "2",
            _bounded_float(0.1, 60),
            "seconds between 0.1 and 60",
        ),
    )


def resolve_secret_key(settings: Settings) -> str:
    """The key that encrypts secrets at rest.

    `TREECAST_SECRET_KEY` wins. Otherwise a key generated earlier into the data
    dir is used, and in dev mode one is generated there on first use. Outside dev
    mode a missing key is a `ConfigError`: a production key must be managed.
    """
    if settings.secret_key:
        return settings.secret_key
    path = settings.secret_key_file
    if path.exists():
        key = path.read_text().strip()
        from treecast.crypto import validate_key

        try:
            validate_key(key)
        except ValueError:
            raise ConfigError(
                f"{path} does not hold a valid Fernet key; delete it or set TREECAST_SECRET_KEY"
            ) from None
        return key
    if not settings.dev:
        raise ConfigError(
            "TREECAST_SECRET_KEY is not set (required outside dev mode; set TREECAST_DEV=1 to generate one)"
        )
    from treecast.crypto import generate_key

    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
