"""`worker.py --processes N`: N worker processes on one host, one task queue.

One Python worker uses one core at most (the GIL), so a host with more cores runs more
processes. They share the task queue (Temporal hands each task to one of them), the
database and this host's git cache, whose per-repository locks (`flock`) hold across
processes as they do across threads. Each child is `worker.py` itself; with metrics on,
child `i` listens on `TREECAST_METRICS_PORT + i`. When one exits, the others are
stopped and the supervisor exits with its status: the service manager (systemd,
Kubernetes, compose) restarts the whole, as it would restart one worker.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

from treecast.devserver import end_process, popen_tied

log = logging.getLogger("treecast.supervisor")

POLL_SECONDS = 0.5


def child_environments(
    environ: Mapping[str, str], count: int, metrics_port: int
) -> list[dict[str, str]]:
    """Each child's environment: this one, with a metrics port of its own when metrics
    are on (one port cannot be bound twice)."""
    children = []
    for index in range(count):
        env = dict(environ)
        if metrics_port:
            env["TREECAST_METRICS_PORT"] = str(metrics_port + index)
        children.append(env)
    return children


def supervise(
    command: Sequence[str],
    environments: Sequence[Mapping[str, str]],
    *,
    grace_seconds: float,
) -> int:
    """Run one child per environment until SIGINT/SIGTERM or until a child exits; stop
    the rest (SIGTERM, then SIGKILL after `grace_seconds`). Returns 0 after a signal,
    else the status of the child that exited first (1 if it exited cleanly)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        for env in environments:
            # Tied: a supervisor killed outright takes its children with it.
            child, _ = popen_tied(list(command), env=dict(env))
            children.append(child)
        log.info("started %d worker processes: %s", len(children), [c.pid for c in children])
        while not stop.wait(POLL_SECONDS):
            ended = next((c for c in children if c.poll() is not None), None)
            if ended is not None:
                status = ended.returncode or 1
                log.error(
                    "worker process %d exited with status %s; stopping the others",
                    ended.pid,
                    ended.returncode,
                )
                break
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()  # all at once: each gets its grace period side by side
        for child in children:
            end_process(child, grace_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
