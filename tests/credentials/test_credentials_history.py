"""On the Temporal dev server with the real worker: an ssh repository's syncs (one that
works, one refused for a replaced host key) leave no trace of the deploy key in the
workflow histories, while the refusal's fingerprints do reach them (and so the
breaker's sync_failed notice, which carries the last error)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

import worker
from models.git import GitErrorType
from models.sync import SyncStatus
from models.tables import Watch
from tests.support.gitrepos import WorkRepo, git
from tests.support.registering import offline
from tests.support.sshserver import keygen, require_sshd, ssh_server
from tests.support.temporal_env import new_task_queue
from treecast.config import Settings
from treecast.db import session_scope
from treecast.gitcache.ssh import HostKey
from treecast.service import workflows
from treecast.service.credentials import CredentialSpec

pytestmark = [pytest.mark.e2e, pytest.mark.sshd]  # two sshds of its own


async def _status(client: Client, repository_id: str) -> SyncStatus | None:
    try:
        return await workflows.get_status(client, repository_id)
    except Exception:
        return None


async def test_the_deploy_key_never_enters_workflow_history(
    settings: Settings,
    tmp_path: Path,
    dev_env: WorkflowEnvironment,
) -> None:
    require_sshd()
    settings = settings.model_copy(
        update={"task_queue": new_task_queue(), "git_timeout_seconds": 20.0}
    )
    origin = WorkRepo(tmp_path / "origin")
    origin.write("README.md", "private\n")
    origin.commit()
    head = git(origin.work, "rev-parse", "HEAD")
    private, public = keygen(tmp_path / "deploy")
    fragments = [
        line for line in private.splitlines() if line.strip() and not line.startswith("-----")
    ]
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        with ssh_server() as server, ssh_server() as impostor:
            server.authorize(public)
            impostor.authorize(public)
            service = offline(settings)  # the test starts the syncs itself
            app = (await service.apps.add("reader", "https://example.com/hooks")).app_id
            good, bad = [
                await service.watches.watch(
                    app,
                    url=host.url(origin.remote),
                    interval=3600,
                    credentials=CredentialSpec(
                        ssh_private_key=private, known_hosts=host.known_hosts()
                    ),
                )
                for host in (server, impostor)
            ]
            # Watched while its key was the pinned one; then the server's key changed.
            pinned = HostKey.parse(server.host_public_key)
            with session_scope(settings.database_url) as session:
                watch = session.get(Watch, (app, bad.repository_id))
                assert watch is not None
                watch.ssh_host_keys = pinned.line()
            client = dev_env.client
            async with worker.build_worker(client, settings, executor):
                for repository_id in (good.repository_id, bad.repository_id):
                    await workflows.start_sync(client, settings, repository_id, 3600, sync_now=True)
                deadline = time.monotonic() + 60
                while True:
                    ok = await _status(client, good.repository_id)
                    refused = await _status(client, bad.repository_id)
                    if (
                        ok is not None
                        and ok.last_commit == head
                        and refused is not None
                        and refused.last_error_type == GitErrorType.HOST_KEY_MISMATCH
                    ):
                        break
                    assert time.monotonic() < deadline, (ok, refused)
                    await asyncio.sleep(0.2)
                histories = {}
                for repository_id in (good.repository_id, bad.repository_id):
                    handle = client.get_workflow_handle(f"sync-repository/{repository_id}")
                    histories[repository_id] = (await handle.fetch_history()).to_json()
                    await workflows.stop(client, repository_id)
        assert refused.last_error is not None
        seen = HostKey.parse(impostor.host_public_key).fingerprint
        assert seen in refused.last_error and pinned.fingerprint in refused.last_error
        assert seen in histories[bad.repository_id]
        for text in histories.values():
            for fragment in fragments:
                assert fragment not in text
            assert "PRIVATE KEY" not in text
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
