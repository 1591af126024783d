"""Where git may connect: the remote's host vetted again at every network command, and pinned.

Registration vets a git URL once (`treecast.urls.vet_git_url`), but git resolves the
name again whenever it fetches, and DNS may have changed in between (rebinding). So
each `ls-remote` and `fetch` vets the URL again, under the same policy, and makes git
connect to the very addresses it vetted: curl's resolve pinning
(`http.curloptResolve`) for http(s), the vetted IP for ssh (with `HostKeyAlias` so
host keys are still checked by name) and git://. A repository with a deploy key gets
the ssh command of `treecast.gitcache.ssh` (its key and pinned host keys) either way.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache.errors import GitError
from treecast.gitcache.ssh import BASE_SSH_COMMAND, SshFiles, ssh_command
from treecast.urls import vet_git_url

SSH_COMMAND = BASE_SSH_COMMAND


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def pinned_remote(
    settings: Settings, url: str, *, token: bool, ssh: SshFiles | None = None
) -> tuple[str, list[tuple[str, str]]]:
    """The URL git should use and the config pinning it to vetted addresses (and, with
    `ssh`, the ssh command offering the repository's key and trusting its pinned host keys).

    Raises a non-retryable `GitUrlRefused` when the URL is refused now (its host
    resolves to a refused address, a file:// URL while they are not allowed, a token
    over plain http); a retryable GitNetworkError when the host does not resolve now.
    """
    try:
        vetted = vet_git_url(
            url,
            allow_private=settings.allow_private_urls,
            allow_file=settings.allow_file_urls,
            token=token,
            allow_insecure=settings.allow_insecure_transport,
        )
    except ValueError as refused:
        raise GitError(
            GitErrorType.URL_REFUSED, f"the repository's URL is refused: {refused}"
        ) from None
    if vetted.unresolved is not None:
        # Not run: git would resolve the name itself, to an address nobody vetted.
        raise GitError(GitErrorType.NETWORK, f"could not resolve host: {vetted.unresolved}")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    literal = host.strip("[]") in vetted.addresses
    keyed: list[tuple[str, str]] = []
    if ssh is not None and vetted.scheme == "ssh":
        # The host keys are pinned under the host's name, whatever address git dials.
        keyed = [("core.sshCommand", ssh.command(vetted.host.strip("[]").lower()))]
    if not vetted.addresses or literal or vetted.port is None:
        return url, keyed  # file://, a literal address, or private addresses allowed
    if vetted.scheme in ("http", "https"):
        entry = f"{host}:{vetted.port}:{','.join(_bracketed(a) for a in vetted.addresses)}"
        return url, [("http.curloptResolve", entry)]
    address = _bracketed(vetted.addresses[0])
    netloc = address if parts.port is None else f"{address}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if vetted.scheme == "ssh":
        return pinned, keyed or [("core.sshCommand", ssh_command(host_key_alias=host))]
    return pinned, []  # git://
