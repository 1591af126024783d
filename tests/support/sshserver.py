"""A real OpenSSH server on 127.0.0.1 for tests: Debian's /usr/sbin/sshd, its own host key,
config and authorized keys in a temp dir, serving bare repositories through git-upload-pack.

`make test` installs openssh-server when it runs as root with apt-get; without sshd the
tests that need it are skipped with that reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_marker
from treecast.devserver import end_process

SSHD = Path("/usr/sbin/sshd")


def require_sshd() -> None:
    """Skip the calling test when there is no sshd to start."""
    if not SSHD.exists():
        pytest.skip(
            "Debian's openssh-server (/usr/sbin/sshd) is not installed; `make test` installs "
            "it as root with apt-get (apt-get install openssh-server)"
        )
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (openssh-client) is not installed")


def keygen(path: Path, key_type: str = "ed25519") -> tuple[str, str]:
    """A new key pair at `path`; (private key text, public key line)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "treecast-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), Path(str(path) + ".pub").read_text().strip()


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    host_public_key: str  # `type base64 comment` of the server's host key
    authorized_keys: Path
    process: subprocess.Popen[bytes]

    def url(self, repository: Path) -> str:
        """The ssh:// URL of a bare repository on this server."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repository}"

    def known_hosts(self) -> str:
        """A known_hosts line for this server, as `ssh-keyscan` would print it."""
        key_type, blob = self.host_public_key.split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {blob}\n"

    def authorize(self, public_key: str) -> None:
        with self.authorized_keys.open("a") as handle:
            handle.write(public_key.strip() + "\n")

    def revoke(self, public_key: str) -> None:
        """Take a key off the server (its next connection is refused)."""
        blob = public_key.split()[1]
        kept = [line for line in self.authorized_keys.read_text().splitlines() if blob not in line]
        self.authorized_keys.write_text("".join(line + "\n" for line in kept))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ssh_server(
    host_key_type: str = "ed25519", *, delay_seconds: float = 0.0
) -> Iterator[SshServer]:
    """A running sshd for the block; the login user is the one running the tests.

    `delay_seconds`: every session waits that long before running git's command (so a
    test can watch the client's processes while they run)."""
    require_sshd()
    require_marker("sshd", "an sshd")
    # Not under pytest's tmp_path: sshd wants to read it (as root it could anyway).
    root = Path(tempfile.mkdtemp(prefix="treecast-sshd-"))
    try:
        host_key = root / "host_key"
        _, host_public = keygen(host_key, host_key_type)
        authorized = root / "authorized_keys"
        authorized.write_text("")
        authorized.chmod(0o600)
        port = _free_port()
        user = pwd.getpwuid(os.getuid()).pw_name
        config = root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {user}",
                    "AllowAgentForwarding no",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "LogLevel ERROR",
                    *(
                        [f'ForceCommand sleep {delay_seconds}; eval "$SSH_ORIGINAL_COMMAND"']
                        if delay_seconds
                        else []
                    ),
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        log = (root / "sshd.log").open("wb")
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()}")
            time.sleep(0.05)
        try:
            yield SshServer(root, port, user, host_public, authorized, process)
        finally:
            end_process(process, 5)
            log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
