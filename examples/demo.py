"""The guided tour behind `make demo`.

Starts the Temporal dev server (Web UI on :8233), a worker and the example
receiver, then drives Treecast with `starter.py` commands, printing each one:

1. this project's own repository (file:// of the checkout) is synced to the receiver;
2. a scratch repository gets a commit that arrives, then its remote breaks: the
   breaker opens and the receiver logs one `sync_failed`; the remote comes back,
   `reset` closes the breaker and the receiver logs `sync_recovered`.

The HTTP API (docs/api.md) runs beside the worker on TREECAST_API_LISTEN (its address is
printed; the admin token is generated into the demo dir unless TREECAST_ADMIN_TOKEN is set).

Everything lives in `$TREECAST_DATA_DIR/demo` (wiped at start). Ctrl-C stops what
the demo started; `--once` exits after the tour with status 0 only if every step
did what it says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import worker
from examples.receiver import Receiver
from models.search_attributes import dev_server_args
from treecast.config import ConfigError, Settings, load_settings, resolve_secret_key
from treecast.crypto import generate_webhook_secret
from treecast.devserver import DevServer
from treecast.temporal_client import connect

ROOT = Path(__file__).resolve().parent.parent


class DemoFailed(Exception):
    """A step did not do what the demo says it does."""


def say(text: str) -> None:
    """Narration for a person."""
    print(f"\n== {text}", flush=True)


async def cli(*argv: str) -> dict[str, Any]:
    """Run one `starter.py` command as a person would (printing it) and return its JSON answer."""
    print("$ python starter.py " + " ".join(argv), flush=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "starter.py"), "--json", *argv, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    answer: dict[str, Any] = json.loads(out) if out.strip() else {}
    if process.returncode:
        answer["_exit"] = process.returncode
    return answer


def git(cwd: Path, *args: str) -> str:
    """Run git for the scratch repository."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Treecast Demo",
        "GIT_AUTHOR_EMAIL": "demo@example.invalid",
        "GIT_COMMITTER_NAME": "Treecast Demo",
        "GIT_COMMITTER_EMAIL": "demo@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def committed_files(repo: Path, commit: str) -> dict[str, bytes]:
    """Regular files of `commit` and their bytes (what the mirror must equal)."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "-z", commit], cwd=repo, check=True, capture_output=True
    ).stdout
    files: dict[str, bytes] = {}
    for entry in filter(None, listing.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        mode, kind, blob = meta.split()
        if kind == b"blob" and mode != b"120000":
            files[path.decode("utf-8", "surrogateescape")] = subprocess.run(
                ["git", "cat-file", "blob", blob.decode()],
                cwd=repo,
                check=True,
                capture_output=True,
            ).stdout
    return files


def check(condition: bool, message: str) -> None:
    """Print a step's result; raise DemoFailed when it did not happen."""
    print(("  ok: " if condition else "  FAILED: ") + message, flush=True)
    if not condition:
        raise DemoFailed(message)


async def tour(
    settings: Settings, receiver: Receiver, secret: str, demo_dir: Path, ui: str
) -> None:
    """The steps, each checked against what the receiver actually got."""
    say("Register the example receiver as an app")
    app = await cli(
        "app", "add", "--name", "example-receiver", "--url", receiver.url, "--secret", secret
    )
    check("app_id" in app, f"app {app.get('app_id')} registered")
    app_id = app["app_id"]

    say("Sync this project's own repository to it")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        print("  (this checkout has no commits yet; skipping this step)")
    else:
        own = await cli("repo", "add", f"file://{ROOT}", "--interval", "300")
        check("repository_id" in own, f"repository {own.get('repository_id')} registered")
        own_id = own["repository_id"]
        await cli("watch", app_id, own_id)
        synced = await cli("sync", own_id, "--wait", "--timeout", "300")
        check(synced.get("ok") is True, f"sync --wait: {synced.get('summary')}")
        commit = synced.get("commit") or ""
        expected = committed_files(ROOT, commit)
        mirrored = receiver.files()
        own_ok = all(mirrored.get(p) == data for p, data in expected.items())
        check(
            own_ok, f"the receiver's mirror holds all {len(expected)} files of commit {commit[:12]}"
        )
        print(f"  look: {ui}/namespaces/default/workflows/sync-repository%2F{own_id}")

    say("A scratch repository: a change is pushed and arrives")
    scratch = demo_dir / "scratch"
    remote = demo_dir / "scratch-remote.git"
    remote.mkdir(parents=True)
    git(remote, "init", "--bare", "-q", "--initial-branch=main")
    scratch.mkdir()
    git(scratch, "init", "-q", "--initial-branch=main")
    (scratch / "hello.md").write_text("# Hello from the demo\n")
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "first")
    git(scratch, "push", "-q", str(remote), "HEAD:main")
    added = await cli("repo", "add", f"file://{remote}", "--interval", "300")
    repo_id = added["repository_id"]
    await cli("watch", app_id, repo_id)
    await cli("sync", repo_id, "--wait")
    (scratch / "hello.md").write_text("# Hello again: this line was pushed during the demo\n")
    (scratch / "news.md").write_text("fresh\n")
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "second")
    git(scratch, "push", "-q", str(remote), "HEAD:main")
    second = git(scratch, "rev-parse", "HEAD")
    synced = await cli("sync", repo_id, "--wait")
    mirrored = receiver.files()
    check(
        all(mirrored.get(p) == d for p, d in committed_files(scratch, second).items()),
        f"commit {second[:12]} arrived (hello.md updated, news.md created)",
    )
    print(
        f"  look: {ui}/namespaces/default/workflows/deliver%2F{repo_id} (the delivery, app by app)"
    )

    say(f"The remote breaks: after {settings.breaker_threshold} failed syncs the breaker opens")
    broken = remote.with_name("scratch-remote.broken")
    remote.rename(broken)
    for _ in range(settings.breaker_threshold):
        result = await cli("sync", repo_id, "--wait")
        print(f"  {result.get('summary')}")
    for _ in range(50):
        if receiver.notices:
            break
        await asyncio.sleep(0.1)
    events = [n["event"] for n in receiver.notices]
    check(events == ["sync_failed"], "the receiver logged exactly one sync_failed")
    print(f"  look: {ui}/namespaces/default/workflows?query=TreecastBreakerState%3D%22open%22")

    say("The remote comes back; reset closes the breaker")
    broken.rename(remote)
    await cli("reset", repo_id)
    for _ in range(100):
        if len(receiver.notices) >= 2:
            break
        await asyncio.sleep(0.1)
    events = [n["event"] for n in receiver.notices]
    check(events == ["sync_failed", "sync_recovered"], "the receiver logged sync_recovered")
    status = await cli("status", repo_id)
    state = status["repositories"][0]["sync"]["breaker_state"]
    check(state == "closed", f"breaker is {state}")
    print(
        f"  look: {ui}/namespaces/default/workflows?query="
        + quote(f'WorkflowId STARTS_WITH "notify/{repo_id}/"')
        + " (the two notices)"
    )


async def start_api(settings: Settings, demo_dir: Path) -> tuple[Any, asyncio.Task[None]] | None:
    """Serve the HTTP API beside the worker: the uvicorn server and its task, or None (with
    a note) when it cannot run here."""
    import socket

    try:
        import uvicorn

        from treecast.api.app import create_app
    except ImportError:
        print("  (the HTTP API is not installed in .venv: fastapi and uvicorn; skipping it)")
        return None
    host, _, port = settings.api_listen.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            print(f"  (port {settings.api_listen} is in use; the HTTP API is not started)")
            return None
    if not settings.admin_token:
        import secrets

        token = secrets.token_hex(24)
        settings = settings.model_copy(update={"admin_token": token})
        (demo_dir / "admin-token").write_text(token + "\n")
    config = uvicorn.Config(
        create_app(settings), host=host, port=int(port), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    print(f"  HTTP API: http://{settings.api_listen} (OpenAPI UI at /docs)")
    if (demo_dir / "admin-token").exists():
        print(f"  admin token in {demo_dir / 'admin-token'}")
    return server, task


async def run(once: bool) -> int:
    """Start everything, take the tour, and stop everything it started."""
    # Failed git fetches are part of the tour; the SDK would print each with a traceback.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    base = load_settings()
    demo_dir = base.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    os.environ.update(
        {
            "TREECAST_DATA_DIR": str(demo_dir),
            "TREECAST_DEV": "1",
            "TREECAST_ALLOW_PRIVATE_URLS": "1",
            "TREECAST_ALLOW_FILE_URLS": "1",
            "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
            "TREECAST_BREAKER_THRESHOLD": os.environ.get("TREECAST_BREAKER_THRESHOLD", "2"),
        }
    )
    settings = load_settings()
    resolve_secret_key(settings)
    server = DevServer(settings, search_attribute_args=dev_server_args())
    say(f"Starting the Temporal dev server on {settings.temporal_address}")
    server.start()
    print(f"  Web UI: {server.ui_url}")
    secret = generate_webhook_secret()
    receiver = Receiver([secret], demo_dir / "mirror").start()
    print(f"  example receiver on {receiver.url}, mirroring into {demo_dir / 'mirror'}")
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        client = await connect(settings)
        async with worker.build_worker(client, settings, executor):
            print(f"  worker polling task queue {settings.task_queue!r}")
            api = await start_api(settings, demo_dir)
            try:
                await tour(settings, receiver, secret, demo_dir, server.ui_url)
            except DemoFailed as failed:
                print(f"\nThe demo stopped: {failed}", file=sys.stderr)
                return 1
            finally:
                if api is not None and once:
                    api[0].should_exit = True
                    await api[1]
            say("Done")
            print(f"Open {server.ui_url} to see the workflows; mirror: {demo_dir / 'mirror'}")
            if not once:
                print("Everything keeps running; Ctrl-C stops it.", flush=True)
                await asyncio.Event().wait()
    finally:
        receiver.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`make demo`)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after the tour instead of waiting for Ctrl-C"
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.once))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
