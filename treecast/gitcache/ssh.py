"""ssh for one git command: a repository's deploy key and pinned host keys, and nothing else.

Every ssh that git starts reads no user or system ssh config (`-F /dev/null`), asks no
agent and offers only the repository's key (`IdentityAgent none`, `IdentitiesOnly yes`),
and trusts only the host keys pinned for that repository (`StrictHostKeyChecking yes`,
`UserKnownHostsFile` the pinned file, `GlobalKnownHostsFile /dev/null`, never updated).
The key and the host keys are written for the one command that needs them into a
directory only this process's user can enter (0700, the files 0600), on a RAM file
system when the machine has one (`/dev/shm`), and removed when the command ends, also
when it fails or times out. Host keys are matched by host name (`HostKeyAlias`), so a
URL pinned to a vetted IP (pinning.py) still checks the name's keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Where the per-command files go: memory when available, never the git cache.
_RAM_DIR = Path("/dev/shm")
TEMP_PREFIX = "treecast-ssh-"

BASE_SSH_COMMAND = "ssh -o BatchMode=yes"


def fingerprint(key_blob_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (the base64 field of a key line)."""
    try:
        blob = base64.b64decode(key_blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a base64 public key") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@dataclass(frozen=True)
class HostKey:
    """One pinned host key: its type (`ssh-ed25519`, ...) and base64 blob. Public."""

    key_type: str
    blob: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def line(self) -> str:
        """The key as stored: `type base64` (no host field: it is added per command)."""
        return f"{self.key_type} {self.blob}"

    @staticmethod
    def parse(line: str) -> HostKey:
        """A stored `type base64` line (ValueError when it is not one)."""
        parts = line.split()
        if len(parts) < 2 or not re.fullmatch(r"[a-z0-9@.-]+", parts[0]):
            raise ValueError("not a host key line")
        fingerprint(parts[1])
        return HostKey(parts[0], parts[1])


def parse_host_keys(text: str) -> tuple[HostKey, ...]:
    """The stored host keys (one `type base64` per line)."""
    return tuple(HostKey.parse(line) for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class SshCredentials:
    """A deploy key (OpenSSH private key text) and the host keys pinned for one repository.

    Never printed (see __repr__); the key exists in memory and, while a git command
    runs, in that command's private temporary file.
    """

    private_key: str
    host_keys: tuple[HostKey, ...]

    def __repr__(self) -> str:
        return f"SshCredentials(***, host_keys={[k.fingerprint for k in self.host_keys]})"

    def secrets(self) -> list[str]:
        """Every form of the key that could show up in text: the whole key and its lines."""
        body = [
            line.strip()
            for line in self.private_key.splitlines()
            if line.strip() and not line.startswith("-----")
        ]
        return [self.private_key.strip(), "".join(body), *(line for line in body if len(line) > 8)]

    def expected_fingerprints(self) -> list[str]:
        return [key.fingerprint for key in self.host_keys]


def ssh_command(
    *,
    host_key_alias: str | None = None,
    identity: Path | None = None,
    known_hosts: Path | None = None,
) -> str:
    """The `core.sshCommand` of one git command.

    Without an identity it is today's plain batch-mode ssh (with the alias when the URL
    was pinned to an address); with one, the least-privilege command described above.
    """
    if identity is None or known_hosts is None:
        if host_key_alias is None:
            return BASE_SSH_COMMAND
        return f"{BASE_SSH_COMMAND} -o HostKeyAlias={shlex.quote(host_key_alias)}"
    options = [
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        f"IdentityFile={identity}",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "UpdateHostKeys=no",
        "CheckHostIP=no",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "ForwardAgent=no",
        "ForwardX11=no",
        "PermitLocalCommand=no",
        "ClearAllForwardings=yes",
    ]
    if host_key_alias is not None:
        options.append(f"HostKeyAlias={host_key_alias}")
    return "ssh -F /dev/null " + " ".join(f"-o {shlex.quote(option)}" for option in options)


@dataclass(frozen=True)
class SshFiles:
    """The private files of one git command: the key and the pinned known_hosts."""

    identity: Path
    known_hosts: Path
    credentials: SshCredentials

    def command(self, host: str) -> str:
        """The ssh command for a remote on `host` (the alias host keys are pinned under)."""
        self.known_hosts.write_text(
            "".join(f"{host} {key.line()}\n" for key in self.credentials.host_keys)
        )
        return ssh_command(
            host_key_alias=host, identity=self.identity, known_hosts=self.known_hosts
        )


def _temp_root() -> str | None:
    if _RAM_DIR.is_dir() and os.access(_RAM_DIR, os.W_OK | os.X_OK):
        return str(_RAM_DIR)
    return None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")


@contextlib.contextmanager
def ssh_files(credentials: SshCredentials) -> Iterator[SshFiles]:
    """Write the key and host keys for one command; removed when the block ends, however."""
    directory = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=_temp_root()))  # 0700
    try:
        identity = directory / "key"
        known_hosts = directory / "known_hosts"
        _write_private(identity, credentials.private_key)
        _write_private(known_hosts, "")
        yield SshFiles(identity, known_hosts, credentials)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- a changed host key ------------------------------------------------------------

_CHANGED = (
    "remote host identification has changed",
    "host key verification failed",
    "has changed and you have requested strict checking",
    "host key is known for",
    "no matching host key type found",
)
_SEEN = re.compile(r"sent by the remote host is\s*(SHA256:[A-Za-z0-9+/]+)", re.IGNORECASE)
_SEEN_TYPE = re.compile(r"No (\S+) host key is known for", re.IGNORECASE)


def is_host_key_failure(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(needle in lowered for needle in _CHANGED)


def host_key_message(what: str, stderr: str, host_keys: tuple[HostKey, ...]) -> str:
    """One line naming the fingerprint the server showed and the ones pinned."""
    expected = ", ".join(key.fingerprint for key in host_keys) or "none pinned"
    seen = _SEEN.search(stderr)
    if seen:
        shown = f"the server presented {seen.group(1)}"
    else:
        other = _SEEN_TYPE.search(stderr)
        kind = f" (an {other.group(1)} key)" if other else ""
        shown = f"the server presented no pinned key type{kind}"
    return (
        f"{what} failed: the ssh host key is not the one pinned for this repository: "
        f"{shown}, expected {expected}. If the host really changed its keys, confirm the "
        "new fingerprint with its operator and pin it (starter.py repo set-credentials "
        "REPO_ID --known-hosts FILE or --scan-host-keys)"
    )
