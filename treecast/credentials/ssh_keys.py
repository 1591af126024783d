"""Deploy keys and host keys as an operator hands them over: read, generated, scanned.

Everything here runs at registration (the CLI, the API), never inside git commands:
`treecast.gitcache.ssh` uses what this module checked and the registry stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import shutil
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from treecast.gitcache.ssh import HostKey, fingerprint
from treecast.urls import vet_git_url

MAX_KEY_BYTES = 16 * 1024
MAX_KNOWN_HOSTS_BYTES = 256 * 1024
SCAN_TIMEOUT_SECONDS = 10
# What `--scan-host-keys` asks for: what GitHub, GitLab and OpenSSH servers offer.
SCAN_TYPES = "ed25519,ecdsa,rsa"


@dataclass(frozen=True)
class DeployKey:
    """A private key ready to store (OpenSSH format), its public line and fingerprint."""

    private_key: str
    public_key: str  # `ssh-ed25519 AAAA... comment`: what goes into the git host
    fingerprint: str

    def __repr__(self) -> str:
        return f"DeployKey({self.fingerprint})"


def _deploy_key(key: object, comment: str) -> DeployKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError("an RSA deploy key must have at least 2048 bits")
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the deploy key must be an Ed25519, ECDSA or RSA key")
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = public.decode()
    return DeployKey(private, f"{line} {comment}".strip(), fingerprint(line.split()[1]))


def load_deploy_key(text: str, comment: str = "treecast") -> DeployKey:
    """Read a private key (OpenSSH or PEM); ValueError with one line when it is unusable.

    A passphrase-protected key is refused: the worker could not unlock it unattended.
    """
    if len(text.encode()) > MAX_KEY_BYTES:
        raise ValueError("the ssh key file is too large to be a private key")
    data = text.strip().encode() + b"\n"
    if b"PRIVATE KEY" not in data:
        raise ValueError("the ssh key file holds no private key (give the private half)")
    key: object
    try:
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(
            "the ssh key is protected by a passphrase; remove it for the worker "
            "(ssh-keygen -p -N '' -f FILE) or generate one with --generate-ssh-key"
        ) from None
    except (ValueError, binascii.Error):
        raise ValueError("the ssh key file is not a private key OpenSSH can read") from None
    except Exception as error:  # e.g. an unsupported cipher
        raise ValueError(f"the ssh key cannot be read ({type(error).__name__})") from None
    return _deploy_key(key, comment)


def generate_deploy_key(comment: str = "treecast") -> DeployKey:
    """A new Ed25519 key pair."""
    return _deploy_key(ed25519.Ed25519PrivateKey.generate(), comment)


# -- host keys ---------------------------------------------------------------------


def _names(host: str, port: int) -> list[str]:
    """How known_hosts may name the server: `host` on port 22, `[host]:port` otherwise (and
    plain `host` too: the file was handed over for this very repository)."""
    return [host] if port == 22 else [f"[{host}]:{port}", host]


def _hashed_match(pattern: str, names: list[str]) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name)): OpenSSH's HashKnownHosts form.
    try:
        _, _, salt64, digest64 = pattern.split("|")
        salt, digest = base64.b64decode(salt64), base64.b64decode(digest64)
    except (ValueError, binascii.Error):
        return False
    return any(
        hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
        for name in names
    )


def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH host patterns: `*` and `?` only (`[` is literal, as in `[host]:port`)."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


def _host_matches(field: str, names: list[str]) -> bool:
    matched = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        hit = (
            _hashed_match(pattern, names)
            if pattern.startswith("|1|")
            else any(_glob(pattern.lower()).fullmatch(name) for name in names)
        )
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def parse_known_hosts(text: str, host: str, port: int) -> tuple[HostKey, ...]:
    """The keys a known_hosts text pins for `host`:`port` (ValueError when none).

    Accepts OpenSSH's known_hosts lines (plain, `[host]:port`, hashed, patterns) and bare
    `type base64` public key lines. `@cert-authority` and `@revoked` lines are ignored.
    """
    if len(text.encode()) > MAX_KNOWN_HOSTS_BYTES:
        raise ValueError("the known_hosts file is too large")
    host = host.strip("[]").lower()
    names = _names(host, port)
    keys: list[HostKey] = []
    seen_hosts = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("@"):
            continue
        fields = line.split()
        if fields[0].startswith(("ssh-", "ecdsa-", "sk-")):  # a bare public key line
            candidates = fields[:2]
        else:
            seen_hosts += 1
            if len(fields) < 3 or not _host_matches(fields[0], names):
                continue
            candidates = fields[1:3]
        try:
            key = HostKey.parse(" ".join(candidates))
        except ValueError:
            raise ValueError(f"a known_hosts line is not a host key: {line[:60]!r}") from None
        if key not in keys:
            keys.append(key)
    if not keys:
        where = f" among its {seen_hosts} host lines" if seen_hosts else ""
        raise ValueError(f"the known_hosts file holds no key for {names[0]}{where}")
    return tuple(keys)


def ssh_host_and_port(url: str) -> tuple[str, int]:
    """The host and port of a normalised ssh URL (ValueError for any other URL)."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ValueError("host keys are pinned for ssh:// (or git@host:path) URLs only")
    return parts.hostname.lower(), parts.port or 22


def scan_host_keys(
    url: str,
    *,
    allow_private: bool,
    allow_file: bool = False,
    allow_insecure: bool = False,
    timeout: float = SCAN_TIMEOUT_SECONDS,
) -> tuple[HostKey, ...]:
    """Ask the ssh server of `url` for its host keys (`ssh-keyscan`), for the operator to
    confirm. The URL is vetted as for a fetch and the scan connects to the vetted address.
    """
    vetted = vet_git_url(
        url,
        allow_private=allow_private,
        allow_file=allow_file,
        token=False,
        allow_insecure=allow_insecure,
    )
    if vetted.scheme != "ssh":
        raise ValueError("host keys are pinned for ssh:// (or git@host:path) URLs only")
    if vetted.unresolved is not None:
        raise ValueError(f"cannot scan host keys: {vetted.unresolved}")
    keyscan = shutil.which("ssh-keyscan")
    if keyscan is None:
        raise ValueError("ssh-keyscan (openssh-client) is not installed")
    target = vetted.addresses[0] if vetted.addresses else vetted.host.strip("[]")
    port = vetted.port or 22
    try:
        done = subprocess.run(
            [keyscan, "-T", str(int(timeout)), "-p", str(port), "-t", SCAN_TYPES, "--", target],
            capture_output=True,
            timeout=timeout * 3 + 5,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ValueError(f"{vetted.host}:{port} did not answer a host key scan") from None
    keys: list[HostKey] = []
    for line in done.stdout.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            key = HostKey.parse(" ".join(fields[1:3]))
            if key not in keys:
                keys.append(key)
    if not keys:
        raise ValueError(f"{vetted.host}:{port} offered no ssh host keys (is it an ssh server?)")
    return tuple(keys)
