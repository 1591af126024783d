"""An app's credentials for a repository: what a front door hands over, checked and
stored encrypted on the app's watch (never shared with another app's).

A watch has at most one kind of credential: none, an access token (`token`), a deploy
key with pinned host keys (`ssh-key`), or a GitHub App installation (`github-app`).
Setting one kind drops the others. Secrets are encrypted with the process's cipher; what
people see (`CredentialInfo`) never holds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from treecast.config import Settings
from treecast.credentials.github_app import APP_ID, INSTALLATION_ID, load_app_key
from treecast.credentials.ssh_keys import (
    generate_deploy_key,
    load_deploy_key,
    parse_known_hosts,
    scan_host_keys,
    ssh_host_and_port,
)
from treecast.crypto import Cipher
from treecast.gitcache.ssh import HostKey, parse_host_keys
from treecast.service.errors import UserError, shown
from treecast.service.results import GITHUB_APP, SSH_KEY, TOKEN, HostKeyInfo
from treecast.store.credentials import StoredCredentials

MAX_TOKEN = 4096


@dataclass
class CredentialSpec:
    """What a caller asks for; fields left at their defaults change nothing.

    - `token`: an access token (https; sent as `x-access-token`).
    - `ssh_private_key` (its text) or `generate_ssh_key`: a deploy key (ssh URLs), which
      needs host keys, already pinned or given now: `known_hosts` (known_hosts text) or
      `scan_host_keys` with `accept_host_keys`, the fingerprints the operator confirmed
      (only those keys are pinned; never trusted on first use). Host keys alone rotate
      the pinned keys and keep the deploy key.
    - `github_app_id`, `github_installation_id`, `github_app_private_key` (PEM text): a
      GitHub App installation (https); on a watch already bound to an app, the fields
      not given keep their values.
    - `clear`: drop every credential (alone).
    """

    token: str | None = None
    ssh_private_key: str | None = None
    generate_ssh_key: bool = False
    known_hosts: str | None = None
    scan_host_keys: bool = False
    accept_host_keys: list[str] = field(default_factory=list)
    github_app_id: str | None = None
    github_installation_id: str | None = None
    github_app_private_key: str | None = None
    clear: bool = False

    def __repr__(self) -> str:
        asked = [name for name, value in vars(self).items() if value not in (None, False, [])]
        return f"CredentialSpec({', '.join(asked)})"

    def kinds(self) -> list[str]:
        """The credential kinds this spec sets (host keys alone set none)."""
        found = []
        if self.token is not None:
            found.append(TOKEN)
        if self.ssh_private_key is not None or self.generate_ssh_key:
            found.append(SSH_KEY)
        if any(
            v is not None
            for v in (self.github_app_id, self.github_installation_id, self.github_app_private_key)
        ):
            found.append(GITHUB_APP)
        return found

    def changes_host_keys(self) -> bool:
        return self.known_hosts is not None or self.scan_host_keys

    def empty(self) -> bool:
        return not (self.kinds() or self.changes_host_keys() or self.clear)


def _offered(settings: Settings, url: str) -> tuple[HostKey, ...]:
    try:
        return tuple(
            scan_host_keys(
                url,
                allow_private=settings.allow_private_urls,
                allow_file=settings.allow_file_urls,
                allow_insecure=settings.allow_insecure_transport,
            )
        )
    except ValueError as error:
        raise UserError("{scan_host_keys}: {reason}", "scan_host_keys", reason=error) from None


def scan(settings: Settings, url: str) -> list[HostKeyInfo]:
    """The host keys the ssh server of `url` offers now (nothing is stored)."""
    return [HostKeyInfo(k.key_type, k.fingerprint) for k in _offered(settings, url)]


def _confirmed(settings: Settings, url: str, accepted: list[str]) -> tuple[HostKey, ...]:
    offered = _offered(settings, url)
    listed = ", ".join(f"{k.key_type} {k.fingerprint}" for k in offered)
    if not accepted:
        raise UserError(
            "{scan_host_keys}: the server offers {listed}; confirm them with its operator "
            "and pass the ones to pin with {accept_host_keys} SHA256:...",
            "accept_host_keys",
            listed=listed,
        )
    wanted = {f.strip() for f in accepted if f.strip()}
    bad = sorted(f for f in wanted if not f.startswith("SHA256:"))
    if bad:
        raise UserError(
            "{accept_host_keys}: {bad} is not a SHA256:... fingerprint",
            "accept_host_keys",
            bad=shown(bad[0]),
        )
    kept = tuple(k for k in offered if k.fingerprint in wanted)
    missing = sorted(wanted - {k.fingerprint for k in kept})
    if missing:
        raise UserError(
            "{accept_host_keys}: the server did not offer {missing} (it offers {listed}); "
            "nothing was stored",
            "accept_host_keys",
            missing=", ".join(missing),
            listed=listed,
        )
    return kept


def _host_keys(settings: Settings, url: str, spec: CredentialSpec) -> tuple[HostKey, ...] | None:
    """The host keys `spec` asks to pin (None: it leaves them as they are)."""
    if spec.known_hosts is not None and spec.scan_host_keys:
        raise UserError("give {known_hosts} or {scan_host_keys}, not both", "known_hosts")
    if spec.accept_host_keys and not spec.scan_host_keys:
        raise UserError(
            "{accept_host_keys} confirms what {scan_host_keys} found; add it", "scan_host_keys"
        )
    if not spec.changes_host_keys():
        return None
    try:
        host, port = ssh_host_and_port(url)
    except ValueError as error:
        raise UserError(str(error)) from None
    if spec.known_hosts is not None:
        try:
            return parse_known_hosts(spec.known_hosts, host, port)
        except ValueError as error:
            raise UserError("{known_hosts}: {reason}", "known_hosts", reason=error) from None
    return _confirmed(settings, url, spec.accept_host_keys)


def check_spec(spec: CredentialSpec, url: str) -> None:
    """Refuse a spec that mixes kinds or does not fit the URL (before anything changes)."""
    kinds = spec.kinds()
    if spec.clear and (kinds or spec.changes_host_keys()):
        raise UserError("{clear} drops every credential; give it alone", "clear")
    if len(kinds) > 1:
        raise UserError(f"a watch uses one kind of credential; got {' and '.join(kinds)} together")
    if spec.ssh_private_key is not None and spec.generate_ssh_key:
        raise UserError("give {ssh_private_key} or {generate_ssh_key}, not both", "ssh_private_key")
    scheme = urlsplit(url).scheme
    if (SSH_KEY in kinds or spec.changes_host_keys()) and scheme != "ssh":
        raise UserError("deploy keys and host keys are for ssh:// (or git@host:path) URLs")
    if (TOKEN in kinds or GITHUB_APP in kinds) and scheme not in ("https", "http"):
        raise UserError("tokens and GitHub Apps are for https:// URLs (use a deploy key for ssh)")


@dataclass
class Planned:
    """The credentials a watch will hold once a spec is applied (checked, not stored yet)."""

    stored: StoredCredentials
    generated: bool = False  # a new key Treecast made: the host cannot accept it yet


def plan(
    settings: Settings,
    cipher: Cipher,
    url: str,
    spec: CredentialSpec,
    current: StoredCredentials | None,
    *,
    comment: str,
) -> Planned:
    """The credentials a watch holding `current` (None: a new watch) will hold with `spec`
    applied, secrets encrypted. Checked first: a UserError, and nothing is changed.
    `comment` names a new deploy key (`treecast-repo_...`)."""
    now = replace(current) if current is not None else StoredCredentials()
    if spec.empty():
        return Planned(now)
    check_spec(spec, url)
    kinds = spec.kinds()
    token = spec.token.strip() if spec.token is not None else None
    if token is not None and (not token or len(token) > MAX_TOKEN or "\n" in token):
        raise UserError("the access token is empty, too long or spans several lines", "token")
    deploy = None
    if spec.generate_ssh_key:
        deploy = generate_deploy_key(comment)
    elif spec.ssh_private_key is not None:
        try:
            deploy = load_deploy_key(spec.ssh_private_key, comment)
        except ValueError as error:
            raise UserError(
                "{ssh_private_key}: {reason}", "ssh_private_key", reason=error
            ) from None
    app_id = installation = app_key = None
    if GITHUB_APP in kinds:
        bound = now.github_app_key_encrypted is not None
        app_id = spec.github_app_id or (now.github_app_id if bound else None)
        installation = spec.github_installation_id or (
            now.github_installation_id if bound else None
        )
        if spec.github_app_private_key is not None:
            try:
                app_key = cipher.encrypt(load_app_key(spec.github_app_private_key))
            except ValueError as error:
                raise UserError(
                    "{github_app_private_key}: {reason}", "github_app_private_key", reason=error
                ) from None
        else:
            app_key = now.github_app_key_encrypted
        if not (app_id and installation and app_key):
            raise UserError(
                "a GitHub App needs {github_app_id}, {github_installation_id} and "
                "{github_app_private_key}",
                "github_app_id",
            )
        if not APP_ID.match(app_id):
            raise UserError(
                "{github_app_id}: {value} is not an app id", "github_app_id", value=shown(app_id)
            )
        if not INSTALLATION_ID.match(installation):
            raise UserError(
                "{github_installation_id}: {value} is not an installation id",
                "github_installation_id",
                value=shown(installation),
            )
    host_keys = _host_keys(settings, url, spec)
    will_have_key = deploy is not None or (now.ssh_key_encrypted and not kinds)
    pinned = host_keys if host_keys is not None else parse_host_keys(now.ssh_host_keys or "")
    if will_have_key and not pinned:
        raise UserError(
            "a deploy key needs the server's host keys pinned: add {host_keys}", "host_keys"
        )
    # Checked: now the new values.
    if spec.clear or kinds:
        now = StoredCredentials(ssh_host_keys=now.ssh_host_keys)
    if spec.clear:
        now.ssh_host_keys = None
    if token is not None:
        now.token_encrypted = cipher.encrypt(token)
    if deploy is not None:
        now.ssh_key_encrypted = cipher.encrypt(deploy.private_key)
        now.ssh_public_key = deploy.public_key
        now.ssh_key_fingerprint = deploy.fingerprint
    if GITHUB_APP in kinds:
        now.github_app_id, now.github_installation_id = app_id, installation
        now.github_app_key_encrypted = app_key
    if host_keys is not None:
        now.ssh_host_keys = "\n".join(k.line() for k in host_keys)
    return Planned(now, generated=spec.generate_ssh_key)
