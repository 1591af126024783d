"""Every Treecast setting, read once from the environment and validated.

`Settings` is a pydantic-settings class: each field is one environment variable
(`TREECAST_` and the field's name in capitals, or its own `validation_alias`), with its
default, its bounds as `Field` constraints and its meaning as the field's description.
`load_settings()` is the only place that reads `os.environ` for Treecast's own settings;
a bad value raises `ConfigError` with one line naming the variable, so `worker.py` and
`starter.py` can print it and exit without a traceback.

To add a setting, add one field to `Settings`:

    breaker_threshold: Count = Field(5, ge=1, le=1000, description="what it means")

Its type says how a bad value is named in the error (`Count` reads "an integer between
1 and 1000"; see the kinds below); an optional one is `X | None = Field(None, ...)` with
`json_schema_extra={"unset": "(what happens then)"}`, a secret one `repr=False`. Then
add the row tests/base/test_config.py prints for docs/configuration.md, and the lines
tests/deploy/test_compose.py asks for in .env.example and docker-compose.yml. `SETTINGS` is the
same table derived from the class, for those tests and the docs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import annotated_types
from pydantic import (
    AfterValidator,
    AliasGenerator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_TASK_QUEUE = "treecast"
DEFAULT_DATABASE_URL = "sqlite:///<data dir>/treecast.db"  # <data dir>: the value of data_dir


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a setting's values are called in errors: `noun`, and with bounds
    "<noun> between <ge> and <le>" (`ranged`)."""

    noun: str
    ranged: bool = True


def _refuse(why: str) -> PydanticCustomError:
    """A refusal whose text follows the variable's name as is (it never shows the value)."""
    return PydanticCustomError("treecast", "{why}", {"why": why})


# --- checks beyond the type: each raises ValueError ("is not <kind>") or a refusal


def _path(value: Path) -> Path:
    return value.expanduser().resolve()  # ValueError on a NUL byte


def _host_port(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(raw)
    return raw


def _listen(raw: str) -> str:
    if not 0 < int(_host_port(raw).rpartition(":")[2]) < 65536:
        raise ValueError(raw)
    return raw


def _fernet_key(raw: str) -> str:
    from treecast.crypto import validate_key

    try:
        validate_key(raw)
    except ValueError:
        raise _refuse(
            " is not a Fernet key (32 url-safe base64 bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None
    return raw


def _secret(raw: str) -> str:
    if len(raw) < 16 or any(c.isspace() for c in raw):
        raise _refuse(
            " must be at least 16 characters without spaces (e.g. `openssl rand -hex 32`)"
        )
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


def _public_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")) or "?" in raw or "#" in raw:
        raise ValueError(raw)
    return raw.rstrip("/")


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


# --- the kinds of value a setting holds

Count = Annotated[int, Kind("an integer")]
ByteCount = Annotated[int, Kind("a byte count")]
Seconds = Annotated[int, Kind("seconds")]
Timeout = Annotated[float, Kind("seconds")]
Rate = Annotated[float, Kind("a rate")]
Port = Annotated[int, Field(ge=0, le=65535), Kind("a port number", ranged=False)]
Flag = Annotated[bool, Kind("a boolean (0/1)")]
HostPort = Annotated[str, AfterValidator(_host_port), Kind("host:port")]
Listen = Annotated[str, AfterValidator(_listen), Kind("host:port")]
Directory = Annotated[Path, AfterValidator(_path), Kind("a directory path")]
DatabaseUrl = Annotated[
    str, AfterValidator(_database_url), Kind("a sqlite:// or postgresql:// URL")
]
PublicUrl = Annotated[str, AfterValidator(_public_url), Kind("an http(s):// URL without a query")]
BaseUrl = Annotated[str, AfterValidator(_http_base_url), Kind("an http(s):// URL")]
GitConfig = Annotated[str, AfterValidator(_git_config), Kind("key=value pairs separated by ;")]
FernetKey = Annotated[str, AfterValidator(_fernet_key)]
SharedSecret = Annotated[str, AfterValidator(_secret)]
LogFormat = Annotated[
    Literal["text", "json"], BeforeValidator(lambda raw: str(raw).lower()), Kind("text or json")
]

_WEEK = 7 * 86400
_KIB, _GIB = 1024, 1 << 30


class Settings(BaseSettings):
    """The validated settings of one process, one field per environment variable."""

    # Settings(...) takes values only: load_settings() reads the environment, from the
    # mapping it is given.
    model_config = SettingsConfigDict(
        # TREECAST_ and the field's name in capitals, unless it names its own variable
        alias_generator=AliasGenerator(validation_alias=lambda field: f"TREECAST_{field.upper()}"),
        case_sensitive=True,
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # a secret never reaches a log through an error
        validate_by_name=True,
        validate_by_alias=True,
    )

    # fmt: off
    temporal_address: HostPort = Field(
        "localhost:7233", validation_alias="TEMPORAL_ADDRESS",
        description="Temporal frontend host:port")
    temporal_namespace: str = Field(
        "default", validation_alias="TEMPORAL_NAMESPACE", description="Temporal namespace")
    task_queue: str = Field(
        DEFAULT_TASK_QUEUE, max_length=200, description="task queue shared by worker and starter")
    data_dir: Directory = Field(
        Path(".treecast"), description="git cache, dev-server database, dev key")
    database_url: DatabaseUrl = Field(DEFAULT_DATABASE_URL, description="SQLite or PostgreSQL URL")
    secret_key: FernetKey | None = Field(
        None, repr=False, description="Fernet key encrypting secrets at rest",
        json_schema_extra={"unset": "(generated in dev)"})
    dev: Flag = Field(False, description="dev mode: generate the secret key into the data dir")
    allow_private_urls: Flag = Field(
        False, description="allow webhooks to private/loopback addresses")
    allow_file_urls: Flag = Field(
        False, description="allow file:// repositories (tests and the demo)")
    allow_insecure_transport: Flag = Field(
        False, description="allow a git token over plain http://")
    git_config: GitConfig = Field(
        "none", description="extra git config for every command, key=value;key=value")
    tree_max_entries: Count = Field(
        5_000_000, ge=1, le=1 << 40,
        description="files a snapshot may list (TreeTooLarge past it)")
    tree_max_subtree_repeats: Count = Field(
        10_000, ge=1, le=1 << 40, description="times one subtree may repeat (tree bombs)")
    tree_max_path_bytes: ByteCount = Field(
        4096, ge=16, le=1 << 20, description="longest path a snapshot may hold")
    tree_max_total_bytes: Count = Field(
        107_374_182_400, ge=1, le=1 << 60, description="bytes a snapshot's files may add up to")
    submodule_max_depth: Count = Field(
        5, ge=1, le=100, description="levels of nested submodules a recursive watch expands")
    submodule_max_count: Count = Field(
        100, ge=1, le=100_000, description="submodules one watch's tree may expand")
    lfs_max_bytes: ByteCount = Field(
        2_147_483_648, ge=1, le=1 << 50,
        description="largest Git LFS object fetched (held back past it)")
    breaker_threshold: Count = Field(
        5, ge=1, le=1000, description="consecutive failed syncs that open the breaker")
    breaker_cooldown_seconds: Seconds = Field(
        1800, ge=1, le=_WEEK, description="how long an open breaker waits")
    poll_interval_seconds: Seconds = Field(
        60, ge=1, le=_WEEK, description="default poll interval of a repository")
    full_sync_seconds: Seconds = Field(
        86400, ge=0, le=30 * 86400,
        description="with remote checks, the longest between two fetches (0 = no checks: fetch every poll)")
    check_shards: Count = Field(
        1, ge=1, le=1000, description="remote-check sweeps (one long activity each)")
    check_concurrency: Count = Field(
        32, ge=1, le=1000, description="remote checks one sweep has in flight at once")
    file_timeout_seconds: Timeout = Field(
        30, ge=0.1, le=3600, description="timeout of one file webhook")
    notice_timeout_seconds: Timeout = Field(
        10, ge=0.1, le=3600, description="timeout of a sync_failed/recovered notice")
    chunk_threshold_bytes: ByteCount = Field(
        1_048_576, ge=_KIB, le=_GIB, description="encoded size above which files are chunked")
    chunk_size_bytes: ByteCount = Field(
        524_288, ge=_KIB, le=_GIB, multiple_of=4,  # whole base64 quanta: each chunk decodes alone
        description="encoded characters per chunk")
    batch_max_files: Count = Field(
        250, ge=1, le=10_000, description="file events per /batch request (apps with batch on)")
    batch_max_bytes: ByteCount = Field(
        4_194_304, ge=_KIB, le=_GIB,
        description="body bytes per /batch request (one event may exceed)")
    git_timeout_seconds: Timeout = Field(
        120, ge=0.1, le=86400, description="timeout of one git command")
    delivery_log_keep: Count = Field(
        1000, ge=1, le=10_000_000, description="delivery attempts kept per app")
    activity_concurrency: Count = Field(
        8, ge=1, le=1000, description="activities one worker runs at once")
    workflow_cache_size: Count = Field(
        20_000, ge=0, le=1_000_000,
        description="workflows one worker keeps in memory (each beyond replays its history)")
    metrics_port: Port = Field(0, description="Prometheus metrics port (0 = off)")
    api_listen: Listen = Field("127.0.0.1:8000", description="host:port the HTTP API listens on")
    admin_token: SharedSecret | None = Field(
        None, repr=False, description="bearer token of the admin API",
        json_schema_extra={"unset": "(unset: admin routes answer 503)"})
    push_secret: SharedSecret | None = Field(
        None, repr=False, description="optional push-hook secret accepted for every repository",
        json_schema_extra={"unset": "(unset)"})
    api_public_url: PublicUrl | None = Field(
        None, description="public base URL of the API for push URLs",
        json_schema_extra={"unset": "(the request's own address)"})
    api_max_body_bytes: ByteCount = Field(
        1_048_576, ge=_KIB, le=_GIB, description="largest API request body")
    api_max_hook_bytes: ByteCount = Field(
        5_242_880, ge=_KIB, le=_GIB, description="largest push-hook request body")
    api_reconcile_max_files: Count = Field(
        1_000_000, ge=1, le=100_000_000,
        description="files an app may list in one reconcile (what it holds)")
    api_reconcile_max_bytes: ByteCount = Field(
        268_435_456, ge=_KIB, le=16 * _GIB,
        description="largest reconcile body (spooled to disk beyond 1 MiB)")
    api_rate_per_second: Rate = Field(
        10, ge=0.01, le=1_000_000,
        description="requests per second per token and per client address")
    api_rate_burst: Count = Field(
        60, ge=1, le=10_000_000, description="requests a token or address may send at once")
    api_status_timeout_seconds: Timeout = Field(
        2, ge=0.1, le=60, description="how long the API waits for live workflow status")
    github_api_url: BaseUrl = Field(
        "https://api.github.com",
        description="GitHub API that mints GitHub App tokens (Enterprise: https://HOST/api/v3)")
    temporal_ui_url: PublicUrl = Field(
        "http://localhost:8233", description="Temporal Web UI the admin page links to")
    admin_session_seconds: Seconds = Field(
        28800, ge=60, le=_WEEK, description="how long an admin page login lasts")
    auto_migrate: Flag = Field(
        False,
        description="worker and API upgrade a database schema that is behind at start (dev mode does too)")
    log_format: LogFormat = Field(
        "text", description="worker and API log lines: text, or json (one object a line)")
    worker_grace_seconds: Timeout = Field(
        50, ge=0, le=3600,
        description="how long a worker stopping on SIGTERM lets running activities finish")
    # fmt: on

    @field_validator("database_url", mode="before")
    @classmethod
    def _in_the_data_dir(cls, value: Any, info: ValidationInfo) -> Any:
        """The default database lives in the data dir (validated just before)."""
        if value == DEFAULT_DATABASE_URL and "data_dir" in info.data:
            return f"sqlite:///{info.data['data_dir']}/treecast.db"
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment comes through load_settings alone

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


# --- the table the docs and the compose files are checked against


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable as docs/configuration.md shows it, derived from its field."""

    name: str
    default: str  # as the docs show it: the text to set, or what happens when unset
    meaning: str
    field: str  # the `Settings` field it fills
    expected: str  # what a bad value "is not"
    optional: bool  # None when unset


def _number(value: float, bytes_: bool) -> str:
    if bytes_:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value % size == 0:
                return f"{int(value // size)} {unit}"
    return str(int(value)) if float(value).is_integer() else str(value)


def _expected(info: FieldInfo) -> str:
    """How errors name a field's values: "seconds between 1 and 604800"."""
    annotations = [info.annotation, *typing.get_args(info.annotation)]
    metadata = [*info.metadata, *(m for a in annotations for m in getattr(a, "__metadata__", ()))]
    kind = next((m for m in metadata if isinstance(m, Kind)), None)
    low = next((cast(float, m.ge) for m in metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((cast(float, m.le) for m in metadata if isinstance(m, annotated_types.Le)), None)
    if kind is None:
        return "valid"
    if not kind.ranged or low is None or high is None:
        return kind.noun
    if kind.noun == "an integer" and low == 1 and high >= 10_000_000:
        return "a positive integer"  # an upper bound that only stops nonsense goes unsaid
    # byte counts in KiB..GiB when both bounds are whole units (else the plain numbers)
    in_units = kind.noun == "a byte count" and low % 1024 == high % 1024 == 0
    return f"{kind.noun} between {_number(low, in_units)} and {_number(high, in_units)}"


def _shown(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "unset" in extra:
        return str(extra["unset"])
    if isinstance(info.default, bool):
        return str(int(info.default))
    if isinstance(info.default, Path):
        return f"./{info.default}"  # relative to where the process starts
    return _number(info.default, False) if isinstance(info.default, float) else str(info.default)


def _row(field: str, info: FieldInfo) -> Setting:
    return Setting(
        name=str(info.validation_alias),
        default=_shown(info),
        meaning=info.description or "",
        field=field,
        expected=_expected(info),
        optional=info.default is None,
    )


# Every setting in the order of the fields (the order they are read and documented in).
SETTINGS: tuple[Setting, ...] = tuple(_row(f, i) for f, i in Settings.model_fields.items())
_BY_KEY = {key: s for s in SETTINGS for key in (s.name, s.field)}


class _Variables(EnvSettingsSource):
    """Treecast's variables in `env`, stripped; a blank one counts as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(Settings)
        self.env_vars = {k: v.strip() for k, v in env.items() if v and v.strip()}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise `ConfigError` naming the first bad variable."""
    raw = _Variables(os.environ if env is None else env)()
    try:
        return Settings(**raw)
    except ValidationError as invalid:
        raise _config_error(invalid.errors(include_url=False)[0], raw) from None


def _config_error(error: Any, raw: Mapping[str, Any]) -> ConfigError:
    """One line naming the variable of pydantic's `error` (a secret's value never shown)."""
    setting = _BY_KEY[str(error["loc"][0])]
    value = raw.get(setting.name, raw.get(setting.field, ""))
    context = error.get("ctx") or {}
    if error["type"] == "treecast":
        return ConfigError(f"{setting.name}{context['why']}")
    if error["type"] == "string_too_long":
        return ConfigError(f"{setting.name} is longer than {context['max_length']} characters")
    if error["type"] == "multiple_of":
        return ConfigError(f"{setting.name}={value} must be a multiple of {context['multiple_of']}")
    from treecast.redact import redact  # a bad database URL may still hold a password

    return ConfigError(f"{setting.name}={redact(str(value))!r} is not {setting.expected}")


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
