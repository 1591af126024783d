"""Request and response bodies: typed, bounded (string lengths, list sizes, no unknown
fields), so validation refuses hostile input before any service call. Most response
models are made from the result they answer (`answers.Answer`)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from treecast.api.answers import Answer
from treecast.service import results
from treecast.service.credentials import CredentialSpec

T = TypeVar("T")

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=200)]
GitToken = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
PrivateKey = Annotated[str, StringConstraints(min_length=1, max_length=16 * 1024)]
KnownHosts = Annotated[str, StringConstraints(min_length=1, max_length=64 * 1024)]
NumericId = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class Strict(BaseModel):
    """Unknown fields are refused: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error: one line a person can act on."""

    error: str


class Data(BaseModel, Generic[T]):
    """Admin answers wrap their object, as Docora's do."""

    data: T


class ListOut(BaseModel, Generic[T]):
    """A page of a list; pass `next_cursor` as `cursor` for the next one (null: the last)."""

    data: list[T]
    next_cursor: str | None = None


ACCESS = (
    "granted: the app's own credentials (or none, for a public repository) reach it; "
    "pending: a generated deploy key not accepted by the git host yet; refused: the host "
    "refused them, and nothing is delivered"
)


class CredentialsOut(
    Answer,
    result=results.CredentialInfo,
    describe={
        "ssh_public_key": "paste it into the git host",
        "token_expires_at": "the last minted app token's expiry",
    },
):
    """Which credential a watch uses and its public parts (never a secret)."""

    kind: str = Field(description="none, token, ssh-key or github-app")
    host_key_fingerprints: list[str] = Field([])  # the default stated in the OpenAPI document


# --- admin ------------------------------------------------------------------


class OnboardIn(Strict):
    app_name: Name
    base_url: Url
    secret: Secret | None = Field(None, description="a whsec_ secret; generated when omitted")
    email: (
        Annotated[str, StringConstraints(max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    website: Url | None = None
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    scheme: Literal["standard-webhooks", "docora"] | None = Field(
        None, description="how webhooks are signed; docora needs client_auth_key"
    )
    client_auth_key: Annotated[str, StringConstraints(min_length=16, max_length=500)] | None = (
        Field(None, description="the HMAC key of the docora scheme (Docora's field)")
    )
    treecast_events: bool | None = Field(
        None, description="a docora app also receives sync_recovered"
    )


class OnboardOut(BaseModel):
    app_id: str
    token: str = Field(description="the app's API bearer token, shown once")
    secret: str = Field(description="the webhook signing secret, shown once")
    created_at: str


class AppOut(Answer, result=results.App):
    pass


class AppWatchOut(
    Answer,
    result=results.Watch,
    fields=(
        "repository_id", "url", "ref", "status", "delivered_commit", "last_error_type",
        "last_error", "retry_count", "last_synced_at", "path_globs", "credentials", "access",
        "access_checked_at", "access_error", "submodules", "lfs", "held_back",
    ),
    describe={"access": ACCESS},
):  # fmt: skip
    path_globs: list[str] = Field(validation_alias=AliasChoices("path_globs", "paths"))
    credentials: CredentialsOut | None = None


class SelfOut(
    Answer,
    result=results.AppDetail,
    fields=(
        "app_id", "name", "base_url", "email", "website", "description", "active_secrets",
        "created_at", "updated_at",
    ),
):  # fmt: skip
    pass


class AppDetailOut(Answer, result=results.AppDetail, exclude=("batch", "sync_completed")):
    watches: list[AppWatchOut] = Field([])


class AppDeletedOut(BaseModel):
    deleted: bool
    repositories: list[str]


class PushSecretOut(BaseModel):
    repository_id: str
    push_secret: str = Field(description="shown once")
    push_url: str


# --- one app ----------------------------------------------------------------


class CredentialFields(Strict):
    """A deploy key with the server's host keys (ssh URLs), or a GitHub App (https URLs);
    see docs/credentials.md. Never echoed back."""

    ssh_private_key: PrivateKey | None = Field(
        None, description="a deploy key's private key (OpenSSH or PEM text, no passphrase)"
    )
    generate_ssh_key: bool = Field(
        False, description="generate an Ed25519 deploy key; the answer has its public key"
    )
    known_hosts: KnownHosts | None = Field(
        None, description="the ssh server's host keys, known_hosts text (pinned)"
    )
    github_app_id: NumericId | None = None
    github_installation_id: NumericId | None = None
    github_app_private_key: PrivateKey | None = Field(
        None, description="the GitHub App's private key (PEM text)"
    )

    def spec(self, token: str | None = None, clear: bool = False) -> CredentialSpec:
        """The `CredentialSpec` these fields ask for (checked by the service)."""
        return CredentialSpec(
            token=token,
            ssh_private_key=self.ssh_private_key,
            generate_ssh_key=self.generate_ssh_key,
            known_hosts=self.known_hosts,
            github_app_id=self.github_app_id,
            github_installation_id=self.github_installation_id,
            github_app_private_key=self.github_app_private_key,
            clear=clear,
        )


class RepositoryIn(CredentialFields):
    url: Url = Field(validation_alias=AliasChoices("url", "github_url"))
    ref: Annotated[str, StringConstraints(max_length=255)] = ""
    token: GitToken | None = Field(None, validation_alias=AliasChoices("token", "github_token"))
    paths: list[Glob] | None = Field(None, max_length=100)
    submodules: Literal["off", "shallow", "recursive"] | None = Field(
        None, description="expand submodules (default off; docs/repository-contents.md)"
    )
    lfs: bool | None = Field(
        None, description="Git LFS objects instead of pointers (default false)"
    )


class CredentialsIn(CredentialFields):
    """New credentials for the app's watch of a repository: one kind (or host keys
    alone), or `clear`."""

    token: GitToken | None = Field(None, validation_alias=AliasChoices("token", "github_token"))
    clear: bool = Field(False, description="drop every credential (give it alone)")


class AdminCredentialsIn(CredentialsIn):
    """New credentials for one app's watch of a repository (`app_id`), or for every watch
    of it."""

    app_id: Annotated[str, StringConstraints(max_length=28)] | None = Field(
        None, description="the app whose watch changes; omitted: every watch of the repository"
    )


class CredentialsSetOut(BaseModel):
    repository_id: str
    credentials: CredentialsOut
    sync_requested: bool
    app_ids: list[str] | None = Field(default=None, description="the watches changed (operators)")


class RepositoryOut(
    Answer,
    result=results.Watched,
    fields=(
        "repository_id", "url", "owner", "name", "ref", "paths", "submodules", "lfs",
        "created_at", "repository_created", "watch_created", "sync_requested", "sync_error",
        "push_secret", "push_url", "credentials",
    ),
    describe={"push_secret": "only for a new repository; shown once"},
):  # fmt: skip
    sync_requested: bool
    sync_error: str | None = None
    push_url: str | None = None
    credentials: CredentialsOut | None = None


class LiveOut(
    Answer,
    result=results.LiveState,
    describe={
        "known": "false: Temporal did not answer; see error",
        "checked_at": "with remote checks: the remote was checked at or after this",
    },
):
    pass


class WatchOut(
    Answer,
    result=results.Watch,
    fields=(
        "repository_id", "url", "owner", "name", "ref", "paths", "status", "delivered_commit",
        "last_error_type", "last_error", "retry_count", "last_synced_at", "created_at", "live",
        "submodules", "lfs", "held_back", "credentials", "access", "access_checked_at",
        "access_error",
    ),
    describe={"held_back": "what the last delivery held back, and why", "access": ACCESS},
):  # fmt: skip
    live: LiveOut
    credentials: CredentialsOut | None = None


class GitTokenIn(Strict):
    token: GitToken = Field(validation_alias=AliasChoices("token", "github_token"))


class GitTokenOut(BaseModel):
    repository_id: str
    sync_requested: bool


class SyncAcceptedOut(BaseModel):
    sync_id: str
    repository_id: str
    status_url: str


class SyncOut(BaseModel):
    sync_id: str
    state: str
    final: bool
    ok: bool
    commit: str | None
    error_type: str | None
    message: str | None
    summary: str
    requested_at: str | None
    finished_at: str | None
    delivery: dict[str, Any] | None = Field(None, description="this app's part of the sync")


class RedeliverOut(BaseModel):
    repository_id: str
    ledger_rows_removed: int
    sync_requested: bool


class DeliveryOut(Answer, result=results.Delivery, exclude=("app_id",)):
    pass


class SelfPatchIn(Strict):
    name: Name | None = Field(None, validation_alias=AliasChoices("name", "app_name"))
    base_url: Url | None = None


class SecretRotateIn(Strict):
    secret: Secret | None = None
    finish: bool = False


class SecretRotateOut(BaseModel):
    secret: str | None = Field(None, description="the new secret, shown once (none with finish)")
    finished: bool


class TokenRotateOut(BaseModel):
    token: str = Field(description="the new API token, shown once; the old one no longer works")


# --- an app's mirror ----------------------------------------------------------


class DigestIn(Strict):
    tree_digest: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="the tree digest of the app's copy"
    )


class ReconcileOut(BaseModel):
    repository_id: str
    status: str = Field(
        description='"in sync", "not in sync" or "N files differ"',
        validation_alias=AliasChoices("status", "summary"),
    )
    in_sync: bool
    commit: str | None = Field(description="the commit the app last fully acknowledged")
    tree_digest: str = Field(description="the digest of what Treecast recorded the app holds")
    files: int = Field(description="files in that record")
    held: int | None = Field(description="files the app listed (null: it sent its digest)")
    missing: int = Field(description="delivered, but the app lacks them (sent again)")
    changed: int = Field(description="the app has other content (sent again)")
    extra: int = Field(description="the app has them, Treecast never delivered them (deleted)")
    differ: int
    repair: bool = Field(description="the difference is being sent")
    sync_requested: bool
    sync_id: str | None = None
    status_url: str | None = None
    sync_error: str | None = None


class SyncCompletedIn(Strict):
    enabled: bool


class SyncCompletedOut(BaseModel):
    sync_completed: bool


# --- anyone -----------------------------------------------------------------


class HealthOut(BaseModel):
    status: str
    pushes: dict[str, int]


class ReadyOut(BaseModel):
    status: str
    database: str
    temporal: str
    migrations: str


class VersionOut(BaseModel):
    version: str
    build: str


class PushOut(Answer, result=results.PushResult):
    repository_ids: list[str]  # always answered: required on the wire
