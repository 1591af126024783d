"""Secrets stay secret, and receivers cannot steer Treecast to private addresses.

The main test runs a real sync on the Temporal dev server (the real worker,
starter.py, git over HTTP with an access token, the example receiver with a
webhook secret), then makes the git remote fail with the token in its own
output so the breaker opens and a `sync_failed` notice goes out. Afterwards it
scans everything a person or an operator could read for the token, the secret
and the encryption key: the log at DEBUG, the CLI's output, the database (the
SQLite file's bytes, or a pg_dump of PostgreSQL), the histories of the
SyncRepository, DeliverFiles and NotifyBreaker workflows, the notice, the
watch's last error and the delivery log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import worker
from activities.delivery import DeliveryActivities
from examples.receiver import Receiver
from models.delivery import DeliverInput, DeliveryErrorType
from models.tables import DeliveryAttempt, Repository, Watch
from tests.support.cli import invoke
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo
from tests.support.receiver_fixture import register
from tests.support.temporal_env import new_task_queue
from tests.support.waiting import until
from treecast.config import Settings, load_settings
from treecast.crypto import generate_key, generate_webhook_secret
from treecast.db import session_scope

# Shapes no redaction pattern knows: only the explicit secret lists can hide them.
TOKEN = "plainTok3n-7f3a9c2e51d04b8aa6"
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


def _pkt(text: str) -> bytes:
    data = text.encode()
    return b"%04x" % (len(data) + 4) + data


@contextmanager
def leaky_git_remote() -> Iterator[str]:
    """A smart-HTTP git remote that refuses every request and echoes the credentials it
    got into git's own error output (`fatal: remote error: ...`)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            decoded = base64.b64decode(header.split()[-1]).decode() if header else ""
            body = (
                _pkt("# service=git-upload-pack\n")
                + b"0000"
                + _pkt(f"ERR access denied: {decoded} ({header}) was revoked\n")
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/handbook"
    finally:
        server.shutdown()
        server.server_close()


def find_leaks(text: str, needles: dict[str, str]) -> list[str]:
    """The names of the needles found in `text`."""
    return [name for name, needle in needles.items() if needle in text]


def _database_text(settings: Settings, postgres_url: str | None) -> str:
    """Everything the database holds, as text: the SQLite files' bytes, or a pg_dump."""
    if postgres_url is None:
        raw = b""
        for path in sorted(settings.data_dir.glob("treecast.db*")):
            raw += path.read_bytes()
        assert raw
        return raw.decode("latin-1")
    from tests.conftest import pg_bindir

    bindir = pg_bindir()  # the server's own pg_dump: an older one refuses a newer server
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    dump = subprocess.run(
        [str(bindir / "pg_dump"), "--data-only", "--inserts", plain],
        check=True,
        capture_output=True,
    ).stdout.decode()
    assert "INSERT INTO public.apps " in dump and "INSERT INTO public.repositories " in dump
    return dump


@pytest.mark.e2e
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_no_secret_in_logs_database_histories_notices_or_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    database: str,
    dev_env: WorkflowEnvironment,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = generate_key()
    postgres_url: str | None = None
    values = {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": key,
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
        "TREECAST_TASK_QUEUE": new_task_queue(),
        "TREECAST_BREAKER_THRESHOLD": "1",
        "TREECAST_GIT_TIMEOUT_SECONDS": "20",
        "MY_TOKEN": TOKEN,
    }
    if database == "postgres":
        postgres_url = request.getfixturevalue("postgres_url")
        from sqlmodel import SQLModel

        from treecast.db import engine_for

        engine = engine_for(postgres_url)
        SQLModel.metadata.drop_all(engine)
        SQLModel.metadata.create_all(engine)
        values["TREECAST_DATABASE_URL"] = postgres_url
    else:
        monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    secret = generate_webhook_secret()
    needles = {
        "token": TOKEN,
        "basic header": BASIC,
        "secret": secret,
        "secret key bytes": secret[len("whsec_") :],
        "encryption key": key,
    }
    repo = WorkRepo(tmp_path / "git")
    repo.write("README.md", "# handbook\n")
    repo.write("docs/guide.md", "guide\n")
    first = repo.commit("first")
    outputs: list[str] = []

    async def run(*argv: str) -> tuple[int, Any, str]:
        code, out, err = await asyncio.to_thread(invoke, list(argv))
        shown = dict(out or {})
        if argv[:2] == ("app", "add"):
            # The one place a secret is printed, by design: once, to whoever registers the app.
            assert shown.pop("secret") == secret
        outputs.append(json.dumps(shown) + err)
        return code, out, err

    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        with (
            git_http_server(tmp_path / "git", TOKEN) as git_server,
            leaky_git_remote() as leaky_url,
            Receiver([secret], tmp_path / "mirror") as rcv,
        ):
            async with worker.build_worker(dev_env.client, settings, executor):
                code, app, err = await run(
                    "app", "add", "--name", "m", "--url", rcv.url, "--secret", secret
                )
                assert code == 0, err
                code, added, err = await run(
                    "repo", "add", git_server.url("remote.git"), "--app", app["app_id"],
                    "--token-env", "MY_TOKEN",
                )  # fmt: skip
                assert code == 0, err
                repository_id = added["repository_id"]
                assert (await run("watch", app["app_id"], repository_id))[0] == 0
                code, out, err = await run("sync", repository_id, "--wait", "--timeout", "60")
                assert code == 0, (out, err)
                assert rcv.files() == repo.files_at(first)
                # The token was really used, in the very form the scan looks for.
                assert any(BASIC in header for header in git_server.auth_headers)

                # The remote turns hostile: its refusals quote the credentials git sent.
                with session_scope(settings.database_url) as session:
                    row = session.get(Repository, repository_id)
                    assert row is not None
                    row.url = leaky_url
                    session.add(row)
                code, out, err = await run("sync", repository_id, "--wait", "--timeout", "60")
                assert code == 1
                await until(lambda: len(rcv.notices) >= 1)
                await run("status", repository_id)

                client = dev_env.client
                histories: dict[str, str] = {}
                # this test's workflows (the dev server is shared)
                mine = f'TaskQueue = "{settings.task_queue}"'
                async for execution in client.list_workflows(mine):
                    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
                    history = await handle.fetch_history()
                    histories[f"{execution.workflow_type} {execution.id}"] = history.to_json()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)

    # The failure is really there, typed and with git's words, just without the secrets.
    [notice] = rcv.notices
    message = notice["error"]["message"]
    assert notice["error"]["type"] == "AuthenticationFailed"
    assert "was revoked" in message and "***" in message, message
    assert {name.split()[0] for name in histories} >= {
        "SyncRepository",
        "DeliverFiles",
        "NotifyBreaker",
    }
    assert any("was revoked" in text for text in histories.values())

    with session_scope(settings.database_url) as session:
        watches = session.exec(select(Watch)).all()
        attempts = session.exec(select(DeliveryAttempt)).all()
    places: dict[str, str] = {
        "log": "\n".join(
            f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
        ),
        "cli output": "\n".join(outputs),
        "database": _database_text(settings, postgres_url),
        "sync_failed notice": json.dumps(notice),
        "watch errors": json.dumps([w.last_error for w in watches]),
        "delivery log": json.dumps([(a.error, a.response_excerpt) for a in attempts]),
        "mirror log": json.dumps(rcv.rejected),
        **{f"history of {name}": text for name, text in histories.items()},
    }
    assert len(caplog.records) > 10  # DEBUG logging really was captured
    leaks = {where: find_leaks(text, needles) for where, text in places.items()}
    assert {where: found for where, found in leaks.items() if found} == {}


# -- a receiver cannot steer Treecast to a private address ------------------------------


def test_dns_that_answers_a_private_address_is_refused_at_connect_time(
    settings: Settings,
    tmp_path: Path,
    receiver: Receiver,
    receiver_secret: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Registered while its name looked public; now its DNS answers loopback. No DNS server
    # runs here, so the system resolver is the one stand-in.
    strict = settings.model_copy(update={"allow_private_urls": False})
    repo = WorkRepo(tmp_path / "repo")
    repo.write("a.txt", "a\n")
    commit = repo.commit()
    base_url = f"http://hooks.example.com:{receiver.port}"
    app_id, repository_id = register(strict, base_url, [receiver_secret], repo.url)
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example.com":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(ApplicationError) as failure:
        ActivityEnvironment().run(
            DeliveryActivities(strict).deliver_changes, DeliverInput(app_id, repository_id, commit)
        )
    assert failure.value.type == DeliveryErrorType.BLOCKED_ADDRESS
    assert failure.value.non_retryable
    assert "127.0.0.1" in str(failure.value)
    assert receiver.requests == []


def test_a_redirect_to_a_private_address_is_not_followed_by_a_delivery(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    # The receiver answers every request with a redirect to another local server (the
    # "internal" target), which must never see a request.
    with Receiver([receiver_secret], tmp_path / "internal") as internal:
        repo = WorkRepo(tmp_path / "repo")
        repo.write("a.txt", "a\n")
        commit = repo.commit()
        app_id, repository_id = register(settings, receiver.url, [receiver_secret], repo.url)
        receiver.fail_next(307, headers={"location": internal.url + "/create"}, count=3)
        with pytest.raises(ApplicationError) as failure:
            ActivityEnvironment().run(
                DeliveryActivities(settings).deliver_changes,
                DeliverInput(app_id, repository_id, commit),
            )
        assert internal.requests == []
    assert failure.value.type == DeliveryErrorType.HTTP_STATUS
    assert "redirects are not followed" in str(failure.value)
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None and "HTTP 307" in (watch.last_error or "")
