"""Git LFS as a repository describes it: which files are pointers, and where their objects are.

A file is an LFS pointer when a `.gitattributes` (the root's or one in a folder above it)
gives its path `filter=lfs` and its blob parses as a pointer (`version`, `oid sha256:`,
`size`, at most `MAX_POINTER_BYTES`): what `git lfs pull` would replace. Where the objects
are is the remote's URL plus `.git/info/lfs`, unless the commit's `.lfsconfig` says
otherwise (`lfs.url`): that is hostile input and goes through the URL policy at the
caller. Fetching the objects is the delivery room's (`treecast.delivery.lfs`).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from posixpath import dirname
from urllib.parse import urlsplit

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache.command import run_git
from treecast.gitcache.environment import git_env
from treecast.gitcache.errors import GitError
from treecast.gitcache.pinning import SSH_COMMAND, pinned_remote
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.ssh import SshCredentials, SshFiles, ssh_files
from treecast.globs import GlobSpec
from treecast.redact import redact

ATTRIBUTES_FILE = ".gitattributes"
LFSCONFIG = ".lfsconfig"
# git-lfs never treats a larger blob as a pointer.
MAX_POINTER_BYTES = 1024
# Larger attribute or config files are ignored (with every file in their scope kept as is).
MAX_ATTRIBUTES_BYTES = 256 * 1024

_VERSIONS = (b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1")
_OID = re.compile(rb"^sha256:([0-9a-f]{64})$")
_SIZE = re.compile(rb"^(0|[1-9][0-9]{0,18})$")


@dataclass(frozen=True, slots=True)
class Pointer:
    """What an LFS pointer file says: the object's SHA-256 and size."""

    oid: str
    size: int


def parse_pointer(data: bytes) -> Pointer | None:
    """The pointer `data` is (git-lfs's strict format), or None when it is not one."""
    if len(data) > MAX_POINTER_BYTES or not data.endswith(b"\n"):
        return None
    lines = data[:-1].split(b"\n")
    if not lines or not lines[0].startswith(b"version "):
        return None
    if lines[0][len(b"version ") :] not in _VERSIONS:
        return None
    values: dict[bytes, bytes] = {}
    for line in lines[1:]:
        key, space, value = line.partition(b" ")
        if not space or not key or key in values:
            return None
        values[key] = value
    keys = list(values)
    if keys != sorted(keys):  # the spec keeps keys sorted; git-lfs refuses otherwise
        return None
    oid = _OID.match(values.get(b"oid", b""))
    size = _SIZE.match(values.get(b"size", b""))
    if oid is None or size is None:
        return None
    return Pointer(oid.group(1).decode(), int(size.group(1)))


# -- .gitattributes ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    spec: GlobSpec
    lfs: bool  # filter=lfs set (True) or filter set to something else / unset (False)


def parse_attributes(text: str) -> list[_Rule]:
    """The `filter` rules of one `.gitattributes` (other attributes and macros ignored)."""
    rules: list[_Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("[attr]"):
            continue
        pattern, *attributes = line.split()
        verdict: bool | None = None
        for attribute in attributes:
            if attribute.startswith("filter="):
                verdict = attribute == "filter=lfs"
            elif attribute in ("-filter", "!filter"):
                verdict = False
        if verdict is None or pattern.startswith("!"):
            continue  # negative patterns are refused by git in attribute files
        try:
            spec = GlobSpec.from_lines([pattern])
        except ValueError:
            continue
        if len(spec):
            rules.append(_Rule(spec, verdict))
    return rules


class LfsAttributes:
    """Answers "is this path `filter=lfs`?" for one commit of one repository cache,
    reading each folder's `.gitattributes` once."""

    def __init__(self, cache: RepositoryCache, commit: str) -> None:
        self.cache = cache
        self.commit = commit
        self._rules: dict[str, list[_Rule]] = {}

    def _rules_in(self, folder: str) -> list[_Rule]:
        if folder in self._rules:
            return self._rules[folder]
        name = f"{folder}/{ATTRIBUTES_FILE}" if folder else ATTRIBUTES_FILE
        info = self.cache.check([f"{self.commit}:{name}"])[0]
        rules: list[_Rule] = []
        if info is not None and info.kind == "blob" and info.size <= MAX_ATTRIBUTES_BYTES:
            with self.cache.blobs() as reader:
                rules = parse_attributes(reader.read(info.oid).decode("utf-8", "replace"))
        self._rules[folder] = rules
        return rules

    def is_lfs(self, path: str) -> bool:
        """True when the attributes in force for `path` set `filter=lfs` (the last
        matching line of the deepest file wins, as in git)."""
        folders = [""]
        parent = dirname(path)
        if parent:
            parts = parent.split("/")
            folders += ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for folder in folders:
            relative = path[len(folder) + 1 :] if folder else path
            for rule in self._rules_in(folder):
                if rule.spec.match_file(relative):
                    verdict = rule.lfs
        return verdict


def touches_lfs_setup(raw_paths: list[bytes]) -> bool:
    """True when a diff changes a `.gitattributes` or the `.lfsconfig` (then which files
    are pointers, or where their objects are, may change for files the diff omits)."""
    return any(
        path == LFSCONFIG.encode() or path.rsplit(b"/", 1)[-1] == ATTRIBUTES_FILE.encode()
        for path in raw_paths
    )


def lfsconfig_url(cache: RepositoryCache, commit: str) -> str | None:
    """The `lfs.url` (or `remote.origin.lfsurl`) the commit's `.lfsconfig` names, if any."""
    info = cache.check([f"{commit}:{LFSCONFIG}"])[0]
    if info is None or info.kind != "blob" or info.size > MAX_ATTRIBUTES_BYTES:
        return None
    try:
        out = run_git(
            ["config", "--blob", info.oid, "--null", "--list"],
            settings=cache.settings,
            cwd=cache.path,
        ).stdout
    except GitError:
        return None
    found: dict[str, str] = {}
    for record in out.split(b"\0"):
        key, _, value = record.decode("utf-8", "replace").partition("\n")
        found[key.lower()] = value
    return found.get("lfs.url") or found.get("remote.origin.lfsurl")


def endpoint_of(remote_url: str) -> str:
    """The LFS server git-lfs derives from a remote URL: `{url}.git/info/lfs` over https
    (an ssh remote's host over https, when it does not answer `git-lfs-authenticate`),
    `{url}/info/lfs` when it already ends in `.git`."""
    url = remote_url.rstrip("/")
    if url.startswith("ssh://"):
        rest = url[len("ssh://") :]
        host_part, _, path = rest.partition("/")
        host = host_part.rpartition("@")[2].split(":")[0]
        url = f"https://{host}/{path}"
    return url + ("/info/lfs" if url.endswith(".git") else ".git/info/lfs")


# -- over ssh: git-lfs-authenticate ------------------------------------------------------

MAX_AUTH_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class LfsAuth:
    """Where an ssh remote's LFS server is and the headers it wants (from the remote)."""

    href: str
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"LfsAuth({self.href!r}, headers=***)"


@contextlib.contextmanager
def _key_files(access: RemoteAccess) -> Iterator[SshFiles | None]:
    if not isinstance(access.credentials, SshCredentials):
        yield None
        return
    with ssh_files(access.credentials) as files:
        yield files


def ssh_authenticate(settings: Settings, access: RemoteAccess) -> LfsAuth:
    """Ask an ssh remote for its LFS server as git-lfs does (`git-lfs-authenticate PATH
    download`), with the repository's deploy key and pinned host keys, at the vetted
    address. Raises GitError with the reason."""
    with _key_files(access) as files:
        target, pins = pinned_remote(settings, access.url, token=False, ssh=files)
        command = dict(pins).get("core.sshCommand", SSH_COMMAND)
        parts = urlsplit(target)
        host = parts.hostname or ""
        login = f"{parts.username}@{host}" if parts.username else host
        path = parts.path.lstrip("/")
        argv = [
            *shlex.split(command),
            *(["-p", str(parts.port)] if parts.port else []),
            "--",
            login,
            f"git-lfs-authenticate {shlex.quote(path)} download",
        ]
        try:
            done = subprocess.run(
                argv,
                env=git_env(),
                capture_output=True,
                timeout=settings.git_timeout_seconds,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(
                GitErrorType.TIMEOUT,
                f"git-lfs-authenticate did not answer within {settings.git_timeout_seconds:g} s",
            ) from None
    secrets = access.secrets()
    if done.returncode != 0:
        detail = redact(done.stderr.decode(errors="replace").strip(), secrets)[:300]
        raise GitError(GitErrorType.OTHER, f"git-lfs-authenticate over ssh failed: {detail}")
    try:
        answer = json.loads(done.stdout[:MAX_AUTH_ANSWER_BYTES])
        href = answer["href"]
        header = answer.get("header") or {}
        if not isinstance(href, str) or not isinstance(header, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise GitError(GitErrorType.OTHER, "git-lfs-authenticate answered no usable href") from None
    headers = {str(k): str(v) for k, v in header.items() if not re.search(r"[\r\n]", f"{k}{v}")}
    return LfsAuth(href, headers)
