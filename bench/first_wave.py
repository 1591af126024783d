"""Benchmark: the first wave, many new repositories registered at once.

    python -m bench.first_wave [--repos 1000] [--files 3] [--interval 3600]

Runs the Temporal dev server (headless), `worker.py` as its own process with the
settings `python worker.py` reads from the environment, and the example receiver on
127.0.0.1. Makes `--repos` small bare repositories in a temp dir (one made with the
git CLI, copied, each copy given its own commit), registers one app and makes it
watch all of them through the service layer (`TreecastService.watches.watch`, what
`POST /api/repositories` calls), and measures from the start of registration until
the receiver has every repository's files. Prints progress every `--every` seconds
and, at the end, where the time went: registration, first syncs, deliveries, and the
CPU of the worker (and its git processes), the dev server and this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples.receiver import Receiver
from tests.conftest import free_port
from tests.support.gitrepos import git
from treecast.crypto import generate_key, generate_webhook_secret
from treecast.devserver import DevServer, end_process, popen_tied

if TYPE_CHECKING:
    from bench.temporal_floor import Floor  # it imports this module's helpers

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"


# -- repositories -------------------------------------------------------------------------


def _write_object(objects: Path, kind: str, body: bytes) -> bytes:
    """Store a loose git object; its binary id."""
    data = f"{kind} {len(body)}\0".encode() + body
    digest = hashlib.sha1(data).hexdigest()
    folder = objects / digest[:2]
    folder.mkdir(exist_ok=True)
    (folder / digest[2:]).write_bytes(zlib.compress(data, 1))
    return bytes.fromhex(digest)


def make_repositories(root: Path, count: int, files: int) -> list[Path]:
    """`count` bare repositories under `root`, each with one commit of `files` small files,
    one of which (README.md) differs per repository.

    One bare repository is made with the git CLI; the others are copies of its folder,
    and every commit is written as loose objects directly (three git commands per
    repository would take minutes at 10,000)."""
    root.mkdir(parents=True, exist_ok=True)
    template = root / "template.git"
    git(root, "init", "--bare", "-q", f"--initial-branch={BRANCH}", str(template))
    shutil.rmtree(template / "hooks", ignore_errors=True)
    shared = {f"file{index}.txt": f"shared file {index}\n".encode() for index in range(1, files)}
    stamp = "Treecast Bench <bench@example.invalid> 1767225600 +0000"
    paths: list[Path] = []
    for number in range(count):
        path = root / f"r{number:05d}.git"
        shutil.copytree(template, path)
        objects = path / "objects"
        contents = {"README.md": f"# repository {number}\n".encode(), **shared}
        tree = b"".join(
            b"100644 " + name.encode() + b"\0" + _write_object(objects, "blob", data)
            for name, data in sorted(contents.items())
        )
        tree_id = _write_object(objects, "tree", tree).hex()
        commit = (
            f"tree {tree_id}\nauthor {stamp}\ncommitter {stamp}\n\nrepository {number}\n"
        ).encode()
        commit_id = _write_object(objects, "commit", commit).hex()
        (path / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        (path / "refs" / "heads" / BRANCH).write_text(commit_id + "\n")
        paths.append(path)
    return paths


# -- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of a process (with `children`: of its waited-for children,
    e.g. a worker's git commands), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def worker_pids(pid: int) -> list[int]:
    """A worker and, under `worker.py --processes N`, its worker processes."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def workers_cpu(pid: int, *, children: bool = False) -> float:
    """`cpu_seconds` summed over a worker's processes (their git commands, with `children`)."""
    total = 0.0
    for each in worker_pids(pid):
        with contextlib.suppress(OSError):  # it ended between the listing and the read
            total += cpu_seconds(each, children=children)
    return total


def own_cpu_seconds() -> float:
    """This process's CPU time (registration, the receiver, the progress queries)."""
    times = os.times()
    return times.user + times.system


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# The worker's Temporal metrics that tell queueing from work (histograms, milliseconds).
LATENCIES = {
    "temporal_workflow_task_schedule_to_start_latency": "workflow task waited for the worker",
    "temporal_workflow_task_execution_latency": "workflow task ran",
    "temporal_activity_schedule_to_start_latency": "activity waited for the worker",
    "temporal_activity_execution_latency": "activity ran",
    "temporal_local_activity_execution_latency": "local activity ran",
}
COUNTERS = (
    "temporal_sticky_cache_hit",
    "temporal_sticky_cache_miss",
    "temporal_workflow_completed",
)


def scrape_metrics(port: int) -> dict[str, tuple[float, float]]:
    """Sums and counts of LATENCIES, and COUNTERS, from the worker's Prometheus endpoint."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        for base in LATENCIES:
            if name in (f"{base}_sum", f"{base}_count"):
                entry = found.setdefault(base, [0.0, 0.0])
                entry[0 if name.endswith("_sum") else 1] += float(value)
        for counter in COUNTERS:
            if name in (counter, f"{counter}_total"):
                found.setdefault(counter, [0.0, 0.0])[0] += float(value)
    return {name: (total, count) for name, (total, count) in found.items()}


def load() -> str:
    """The load averages, as `uptime` shows them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class _LastRecord(list[Any]):
    """Stands in for `Receiver.requests`: keeps only each handler thread's latest record
    (memory stays flat at 10,000 repositories, and concurrent deliveries to the one
    receiver cannot take each other's record)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def append(self, record: Any) -> None:
        self.local.last = record


class TimedReceiver(Receiver):
    """The example receiver, noting when each repository's files had all arrived."""

    def __init__(self, *args: Any, files: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._files = files
        self._paths: dict[str, set[str]] = {}
        self.delivered_at: dict[str, float] = {}  # repository id -> time.monotonic()
        self._mutex = threading.Lock()
        self._last = _LastRecord()
        self.requests = self._last

    def handle(
        self, event: str, body: bytes, headers: dict[str, str], raw_path: str = ""
    ) -> tuple[int | None, dict[str, str], bytes, float]:
        self._last.local.last = None
        answer = super().handle(event, body, headers, raw_path)
        record = self._last.local.last  # appended by this thread during handle()
        if answer[0] == 200 and record is not None and record.path is not None:
            repository_id = record.payload.get("repository", {}).get("repository_id")
            if repository_id:
                with self._mutex:
                    seen = self._paths.setdefault(repository_id, set())
                    seen.add(record.path)
                    if len(seen) >= self._files and repository_id not in self.delivered_at:
                        self.delivered_at[repository_id] = time.monotonic()
        return answer


@dataclass
class Wave:
    """What one run measured (monotonic times, relative to the start of registration)."""

    repos: int
    registered_at: dict[str, float] = field(default_factory=dict)
    synced_at: dict[str, float] = field(default_factory=dict)
    delivered_at: dict[str, float] = field(default_factory=dict)
    registration_seconds: float = 0.0
    total_seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    worker_peak_rss_mb: float = 0.0
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (sum, count)
    anatomy: list[dict[str, float]] = field(default_factory=list)  # bench.wave_anatomy.steps_of


def percentile(values: list[float], share: float) -> float:
    """The `share` percentile (0-1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def first_snapshots(database_url: str, since: datetime) -> dict[str, datetime]:
    """Repository id -> when its first snapshot was recorded (UTC), from the database."""
    from sqlmodel import func, select

    from models.tables import Snapshot
    from treecast.db import session_scope

    with session_scope(database_url) as session:
        rows = session.exec(
            select(Snapshot.repository_id, func.min(Snapshot.taken_at)).group_by(
                Snapshot.repository_id
            )
        ).all()
    found = {rid: _naive_utc(taken) for rid, taken in rows if taken is not None}
    return {rid: taken for rid, taken in found.items() if taken >= since}


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


# -- the run ------------------------------------------------------------------------------


def bench_env(data_dir: Path, port: int) -> dict[str, str]:
    """The worker's environment: only what the benchmark must set (addresses, the key,
    file:// and loopback URLs); every tuning setting keeps its production default."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TREECAST_")}
    return {
        **inherited,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "TREECAST_DATA_DIR": str(data_dir),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_TASK_QUEUE": "treecast-first-wave",
    }


async def register(
    service: Any, app_id: str, urls: list[str], concurrency: int, wave: Wave, started: float
) -> None:
    """Make the app watch every repository, `concurrency` registrations at a time."""
    queue = list(reversed(urls))

    async def one_after_another() -> None:
        while queue:
            url = queue.pop()
            result = await service.watches.watch(app_id, url=url)
            if not result.sync_requested:
                raise RuntimeError(f"no sync was requested for {url}: {result.unreachable}")
            wave.registered_at[result.repository_id] = time.monotonic() - started

    await asyncio.gather(*(one_after_another() for _ in range(concurrency)))


async def run_wave(args: argparse.Namespace, tmp: Path) -> Wave:
    """Set everything up, register, follow the wave until every repository delivered."""
    print(f"making {args.repos} repositories ({args.files} files each)", flush=True)
    made = time.monotonic()
    repositories = make_repositories(tmp / "repos", args.repos, args.files)
    print(f"  made in {time.monotonic() - made:.1f}s", flush=True)

    env = bench_env(tmp / "data", free_port())
    worker_log = tmp / "worker.log"
    from models.search_attributes import dev_server_args
    from treecast.config import load_settings
    from treecast.service.core import TreecastService

    # This process stands for the API: its own settings add the poll interval the
    # repositories are registered with (the worker never reads it).
    settings = load_settings({**env, "TREECAST_POLL_INTERVAL_SECONDS": str(args.interval)})
    server = DevServer(settings, ui=False, search_attribute_args=dev_server_args())
    server.start()
    assert server.pid is not None
    for pair in args.worker_env:
        name, _, value = pair.partition("=")
        env[name] = value
    if args.metrics:
        env["TREECAST_METRICS_PORT"] = str(free_port())
    with worker_log.open("wb") as log:
        # Tied like the dev server: an interrupted benchmark leaves no worker behind.
        processes = ["--processes", str(args.worker_processes)] if args.worker_processes > 1 else []
        worker, _ = popen_tied(
            [sys.executable, str(ROOT / "worker.py"), *processes],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    secret = generate_webhook_secret()
    wave = Wave(repos=args.repos)
    try:
        receiver = TimedReceiver([secret], tmp / "mirror", files=args.files)
        with receiver:
            service = TreecastService(settings)
            app_id = (await service.apps.add("first-wave", receiver.url, secret)).app_id
            await service.client()
            await wait_until_polling(worker, worker_log, args.worker_processes)
            urls = [f"file://{path}" for path in repositories]
            print(
                f"registering {args.repos} repositories, {args.concurrency} at a time "
                f"(load {load()})",
                flush=True,
            )
            since = datetime.now(UTC).replace(tzinfo=None)
            started = time.monotonic()
            cpu_before = {
                "worker": workers_cpu(worker.pid),
                "git": workers_cpu(worker.pid, children=True),
                "dev server": cpu_seconds(server.pid),
                "bench": own_cpu_seconds(),
            }
            registering = asyncio.ensure_future(
                register(service, app_id, urls, args.concurrency, wave, started)
            )
            registering.add_done_callback(
                lambda _: setattr(wave, "registration_seconds", time.monotonic() - started)
            )
            await follow(
                args, wave, receiver, settings.database_url, since, started, worker, server
            )
            await registering
            wave.total_seconds = max(wave.delivered_at.values())
            wave.cpu = {
                "worker": workers_cpu(worker.pid) - cpu_before["worker"],
                "git": workers_cpu(worker.pid, children=True) - cpu_before["git"],
                "dev server": cpu_seconds(server.pid) - cpu_before["dev server"],
                "bench": own_cpu_seconds() - cpu_before["bench"],
            }
            wave.worker_peak_rss_mb = sum(peak_rss_mb(p) for p in worker_pids(worker.pid))
            if args.metrics:
                wave.metrics = await asyncio.to_thread(
                    scrape_metrics, int(env["TREECAST_METRICS_PORT"])
                )
            snapshots = first_snapshots(settings.database_url, since)
            offset = datetime.now(UTC).replace(tzinfo=None)
            now = time.monotonic() - started
            wave.synced_at = {
                rid: now - (offset - taken).total_seconds() for rid, taken in snapshots.items()
            }
            if args.anatomy:
                from bench.wave_anatomy import anatomy
                from models.sync import deliver_workflow_id, sync_workflow_id

                pairs = [(sync_workflow_id(r), deliver_workflow_id(r)) for r in wave.registered_at]
                wave.anatomy = await anatomy(await service.client(), pairs)
    finally:
        end_process(worker, 30)
        server.stop()
    return wave


async def wait_until_polling(worker: subprocess.Popen[bytes], log: Path, count: int = 1) -> None:
    """Until the worker (each of its `count` processes) logged that it polls its task queue."""
    deadline = time.monotonic() + 60
    while log.read_bytes().count(b"worker polling task queue") < count:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start; see {log}")
        await asyncio.sleep(0.1)


async def follow(
    args: argparse.Namespace,
    wave: Wave,
    receiver: TimedReceiver,
    database_url: str,
    since: datetime,
    started: float,
    worker: subprocess.Popen[bytes],
    server: DevServer,
) -> None:
    """Print progress every `args.every` seconds until every repository delivered."""
    assert server.pid is not None
    last = (0.0, 0, workers_cpu(worker.pid), cpu_seconds(server.pid))
    deadline = started + args.timeout
    while True:
        await asyncio.sleep(0.2)
        now = time.monotonic()
        done = len(receiver.delivered_at)
        finished = done >= wave.repos
        if finished or now - started - last[0] >= args.every:
            elapsed = now - started
            synced = await asyncio.to_thread(first_snapshots, database_url, since)
            worker_cpu, server_cpu = workers_cpu(worker.pid), cpu_seconds(server.pid)
            window = elapsed - last[0]
            print(
                f"  {elapsed:6.0f}s  registered {len(wave.registered_at):>6}  "
                f"synced {len(synced):>6}  delivered {done:>6} "
                f"({(done - last[1]) / window:6.1f}/s now, {done / elapsed:6.1f}/s overall)  "
                f"worker {100 * (worker_cpu - last[2]) / window:3.0f}%  "
                f"dev server {100 * (server_cpu - last[3]) / window:3.0f}%  load {load()}",
                flush=True,
            )
            last = (elapsed, done, worker_cpu, server_cpu)
        if finished:
            break
        if worker.poll() is not None:
            raise RuntimeError("the worker exited during the wave")
        if now > deadline:
            raise TimeoutError(f"only {done} of {wave.repos} delivered after {args.timeout:.0f}s")
    wave.delivered_at = {rid: at - started for rid, at in receiver.delivered_at.items()}


def report(wave: Wave) -> list[str]:
    """Where the time went, as lines to print."""
    rids = list(wave.registered_at)
    synced = [wave.synced_at[r] for r in rids if r in wave.synced_at]
    waits = [wave.synced_at[r] - wave.registered_at[r] for r in rids if r in wave.synced_at]
    deliveries = [
        wave.delivered_at[r] - wave.synced_at[r]
        for r in rids
        if r in wave.synced_at and r in wave.delivered_at
    ]
    total = wave.total_seconds

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return (
            f"p50 {statistics.median(values):.1f}s, p95 {percentile(values, 0.95):.1f}s, "
            f"max {max(values):.1f}s"
        )

    lines = [
        f"{wave.repos} repositories: every one delivered {total:.1f}s after registration "
        f"began ({wave.repos / total:.1f} repositories/s)",
        f"  registration: {wave.registration_seconds:.1f}s "
        f"({wave.repos / max(wave.registration_seconds, 1e-9):.0f}/s)",
        f"  first syncs: the last at {max(synced, default=0):.1f}s; "
        f"registered -> synced {spread(waits)}",
        f"  deliveries: the last at {total:.1f}s; synced -> delivered {spread(deliveries)}",
    ]
    cpu = ", ".join(
        f"{name} {seconds:.0f}s ({100 * seconds / total:.0f}% of a core)"
        for name, seconds in wave.cpu.items()
    )
    lines.append(f"  CPU: {cpu}; load {load()}")
    lines.append(f"  worker peak RSS {wave.worker_peak_rss_mb:.0f} MiB")
    for name, meaning in LATENCIES.items():
        if name in wave.metrics and wave.metrics[name][1]:
            total_ms, count = wave.metrics[name]
            lines.append(f"  {meaning}: {count:.0f} times, mean {total_ms / count:.0f} ms")
    counters = {name: wave.metrics[name][0] for name in COUNTERS if name in wave.metrics}
    if counters:
        lines.append("  " + ", ".join(f"{name} {value:.0f}" for name, value in counters.items()))
    if wave.anatomy:
        from bench.wave_anatomy import report as anatomy_report

        lines += anatomy_report(wave.anatomy)
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's arguments (tests run it at a tiny size through these)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.first_wave", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--files", type=int, default=3, help="files per repository (>= 1)")
    parser.add_argument(
        "--interval",
        type=int,
        default=3600,
        help="poll interval the repositories get (default 3600: no poll of a synced "
        "repository competes with the first syncs)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="registrations in flight at once"
    )
    parser.add_argument("--every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (worker log)")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the worker beyond its defaults (to compare tunings)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="turn on the worker's Prometheus metrics and print its task latencies",
    )
    parser.add_argument(
        "--anatomy",
        action="store_true",
        help="after the wave, read every repository's histories and print where its "
        "delivery waited (bench.wave_anatomy)",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        metavar="N",
        help="run the worker as `worker.py --processes N` (CPU summed over its processes)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="then run the same wave with Temporal alone (bench.temporal_floor: the same "
        "workflow steps, activities that do nothing) and print Treecast's ratios to it",
    )
    return parser


def floor_ratios(wave: Wave, floor: Floor) -> list[str]:
    """Treecast's wave against Temporal alone, per repository."""
    lines = [
        f"Treecast / Temporal alone: time {wave.total_seconds / floor.total_seconds:.2f}x "
        f"({wave.total_seconds:.0f}s / {floor.total_seconds:.0f}s)"
    ]
    for name in ("worker", "dev server", "bench"):
        mine = 1000 * wave.cpu[name] / wave.repos
        bare = 1000 * floor.cpu[name] / floor.repos
        lines.append(f"  {name} CPU per repository: {mine:.0f} ms / {bare:.0f} ms")
    git = 1000 * wave.cpu["git"] / wave.repos
    lines.append(f"  git CPU per repository: {git:.0f} ms (none in the floor)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="treecast-first-wave-"))
    try:
        wave = asyncio.run(run_wave(args, tmp))
        for line in report(wave):
            print(line, flush=True)
        if args.floor:
            from bench.temporal_floor import report as floor_report
            from bench.temporal_floor import run_floor

            floor = asyncio.run(
                run_floor(args.repos, tmp / "floor", every=args.every, anatomy=args.anatomy)
            )
            for line in [*floor_report(floor), *floor_ratios(wave, floor)]:
                print(line, flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
