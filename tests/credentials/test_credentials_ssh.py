"""Deploy keys against a real OpenSSH server on 127.0.0.1 (tests/support/sshserver.py): a sync with
the right key, a wrong key, a replaced host key, and where the key must never show up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import tempfile
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import starter
from activities.git import GitActivities
from models.git import GitErrorType, SnapshotInput, SnapshotResult
from models.tables import App, Watch, new_app_id
from tests.support.githttp import silent_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.registering import offline
from tests.support.sshserver import SshServer, keygen, ssh_server
from treecast.cli.format import status_table
from treecast.config import Settings
from treecast.credentials.ssh_keys import load_deploy_key, parse_known_hosts
from treecast.db import session_scope
from treecast.gitcache import ssh as gitssh
from treecast.gitcache.ssh import HostKey
from treecast.remote_access import ensure_commit
from treecast.service.access import AccessRefused
from treecast.service.core import TreecastService, run
from treecast.service.credentials import CredentialSpec, plan
from treecast.service.errors import UserError
from treecast.service.repositories import register as register_repository
from treecast.service.results import Watched
from treecast.store import keys


@pytest.fixture
def server(sshd: SshServer) -> SshServer:
    return sshd


@pytest.fixture
def origin(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "origin")
    work.write("README.md", "private readme\n")
    work.write("docs/a.md", "a\n")
    work.commit()
    return work


@pytest.fixture
def deploy_key(tmp_path: Path, server: SshServer) -> tuple[Path, str]:
    """A key authorised on the server: (private key file, private key text)."""
    private, public = keygen(tmp_path / "deploy")
    server.authorize(public)
    return tmp_path / "deploy", private


def key_fragments(private_key: str) -> list[str]:
    """Pieces of the key that must never appear anywhere (the base64 lines of its body)."""
    return [
        line.strip()
        for line in private_key.splitlines()
        if line.strip() and not line.startswith("-----")
    ]


def snapshot(settings: Settings, repository_id: str) -> SnapshotResult:
    result = ActivityEnvironment().run(
        GitActivities(settings).snapshot_repository, SnapshotInput(repository_id)
    )
    assert isinstance(result, SnapshotResult)
    return result


def failure(settings: Settings, repository_id: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        snapshot(settings, repository_id)
    return info.value


def register(service: TreecastService, url: str, spec: CredentialSpec) -> Watched:
    """The repository, watched by a new app with `spec` (checked against the host); no
    sync is asked for (`offline`)."""
    app = run(service.apps.add("reader", "https://example.com/hooks"))
    return run(service.watches.watch(app.app_id, url=url, credentials=spec))


def register_deploy_key(
    service: TreecastService, server: SshServer, origin: WorkRepo, deploy_key: tuple[Path, str]
) -> Watched:
    """`origin` on the ssh server, watched with the deploy key and the server's host key."""
    spec = CredentialSpec(ssh_private_key=deploy_key[1], known_hosts=server.known_hosts())
    return register(service, server.url(origin.remote), spec)


def await_status(service: TreecastService, repository_id: str) -> dict[str, Any]:
    """What `status` knows of the repository from the database (no Temporal here)."""
    import asyncio

    report = asyncio.run(service.repositories.status(repository_id))
    return {"apps": [asdict(w) for w in report.repositories[0].apps]}


@pytest.fixture
def ssh_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The per-command ssh directories this test makes (they must not outlive a command).
    Recorded as they are made, not by listing the shared temp folder, where other test
    processes' commands come and go."""
    made: list[Path] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        path = real(*args, **kwargs)
        if Path(path).name.startswith(gitssh.TEMP_PREFIX):
            made.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    return made


def leftovers(made: list[Path]) -> list[Path]:
    """Which of them are still there (none, once the commands are done); fails when the
    commands made none, so the check cannot pass by looking at nothing."""
    assert made, "no ssh command ran"
    return [path for path in made if path.exists()]


def test_a_deploy_key_syncs_a_private_repository(
    settings: Settings,
    server: SshServer,
    origin: WorkRepo,
    deploy_key: tuple[Path, str],
    ssh_dirs: list[Path],
) -> None:
    service = offline(settings)
    info = register_deploy_key(service, server, origin, deploy_key)
    result = snapshot(settings, info.repository_id)
    assert result.commit == git(origin.work, "rev-parse", "HEAD")
    assert result.file_count == 2 and result.ref == "main"
    assert leftovers(ssh_dirs) == []  # the key's files went with the command
    # Delivery on another worker fetches the commit with the same key.
    elsewhere = settings.model_copy(update={"data_dir": settings.data_dir / "other-worker"})
    assert result.commit is not None
    assert ensure_commit(elsewhere, info.repository_id, result.commit).has_commit(result.commit)

    # What people see: the kind, the key's fingerprint and the pinned host key; no secret.
    listed = run(service.repositories.list())[0].credentials
    fingerprint = load_deploy_key(deploy_key[1]).fingerprint
    host = HostKey.parse(server.host_public_key)
    assert (listed.kind, listed.ssh_key_fingerprint) == ("ssh-key", fingerprint)
    assert listed.host_key_fingerprints == [host.fingerprint]
    row: dict[str, Any] = {
        "repository_id": info.repository_id,
        "url": info.url,
        "ref": "",
        "apps": [],
        "sync": None,
        "credentials": {
            "kind": listed.kind,
            "ssh_key_fingerprint": listed.ssh_key_fingerprint,
            "host_key_fingerprints": listed.host_key_fingerprints,
        },
    }
    assert f"fetched with: ssh-key {fingerprint} (host keys {host.fingerprint})" in status_table(
        [row]
    )


def test_a_wrong_key_is_refused_at_watch_time_and_fails_a_sync_without_retrying(
    settings: Settings, server: SshServer, origin: WorkRepo, tmp_path: Path
) -> None:
    stranger, _ = keygen(tmp_path / "stranger")  # never authorised
    service = offline(settings)
    url = server.url(origin.remote)
    with pytest.raises(AccessRefused) as refused:
        register(
            service, url, CredentialSpec(ssh_private_key=stranger, known_hosts=server.known_hosts())
        )
    assert "Permission denied (publickey" in str(refused.value)
    assert "nothing was saved" in str(refused.value)
    assert run(service.repositories.list()) == []
    # A key that worked once and was then taken off the host fails the sync.
    private, public = keygen(tmp_path / "once")
    server.authorize(public)
    info = register(
        service, url, CredentialSpec(ssh_private_key=private, known_hosts=server.known_hosts())
    )
    server.revoke(public)
    error = failure(settings, info.repository_id)
    assert error.type == GitErrorType.AUTHENTICATION_FAILED and error.non_retryable
    assert "Permission denied (publickey" in error.message
    for fragment in [*key_fragments(stranger), *key_fragments(private)]:
        assert fragment not in error.message and fragment not in str(refused.value)


def test_a_replaced_host_key_is_refused_naming_both_fingerprints(
    settings: Settings, server: SshServer, origin: WorkRepo, deploy_key: tuple[Path, str]
) -> None:
    pinned = HostKey.parse(server.host_public_key)
    with ssh_server() as impostor:  # same address, another host key
        impostor.authorize(Path(str(deploy_key[0]) + ".pub").read_text())
        service = offline(settings)
        seen_line = impostor.host_public_key
        seen = HostKey.parse(seen_line).fingerprint
        url = impostor.url(origin.remote)
        # The host key pinned is the real server's (a bare key line, as from a docs page).
        spec = CredentialSpec(ssh_private_key=deploy_key[1], known_hosts=pinned.line())
        with pytest.raises(AccessRefused) as refused:
            register(service, url, spec)
        assert seen in str(refused.value) and pinned.fingerprint in str(refused.value)
        # Pinned once it was right, then the server's key changed: the sync is refused.
        info = register(service, url, replace(spec, known_hosts=seen_line))
        with session_scope(settings.database_url) as session:
            [watch] = session.exec(select(Watch)).all()
            watch.ssh_host_keys = pinned.line()
        error = failure(settings, info.repository_id)
        assert error.type == GitErrorType.HOST_KEY_MISMATCH and error.non_retryable
        assert seen in error.message and pinned.fingerprint in error.message
        assert "not the one pinned" in error.message

        # Rotating the host keys from the service changes only them (the deploy key stays).
        run(
            service.watches.set_credentials(
                info.repository_id, CredentialSpec(known_hosts=seen_line)
            )
        )
        after = run(service.repositories.get(info.repository_id)).credentials
    assert after.kind == "ssh-key" and after.host_key_fingerprints == [seen]
    assert after.ssh_key_fingerprint == load_deploy_key(deploy_key[1]).fingerprint


@pytest.mark.sshd  # a slow sshd of its own
def test_the_key_never_appears_in_clear(
    settings: Settings,
    origin: WorkRepo,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ssh_dirs: list[Path],
) -> None:
    """Not in the database, the cache directory, `ps` output or logs; its files are gone."""
    caplog.set_level(logging.DEBUG)
    with ssh_server(delay_seconds=0.5) as server:  # slow, so ps sees ssh running
        private, public = keygen(tmp_path / "deploy")
        server.authorize(public)
        deploy_key = (tmp_path / "deploy", private)
        _check_key_never_appears(settings, server, origin, deploy_key, caplog, ssh_dirs)


def _check_key_never_appears(
    settings: Settings,
    server: SshServer,
    origin: WorkRepo,
    deploy_key: tuple[Path, str],
    caplog: pytest.LogCaptureFixture,
    ssh_dirs: list[Path],
) -> None:
    service = offline(settings)
    info = register_deploy_key(service, server, origin, deploy_key)
    fragments = key_fragments(deploy_key[1])
    seen_ssh: list[str] = []
    stop = threading.Event()

    def watch_ps() -> None:
        while not stop.is_set():
            listing = subprocess.run(
                ["ps", "-e", "-ww", "-o", "args"], capture_output=True, text=True
            ).stdout
            seen_ssh.extend(line for line in listing.splitlines() if "IdentityFile=" in line)
            for fragment in fragments:
                assert fragment not in listing

    sampler = threading.Thread(target=watch_ps, daemon=True)
    sampler.start()
    try:
        for attempt in range(5):  # until ps caught an ssh git started, at least once
            settings_n = settings.model_copy(update={"data_dir": settings.data_dir / f"w{attempt}"})
            snapshot(settings_n, info.repository_id)
            if seen_ssh:
                break
    finally:
        stop.set()
        sampler.join()
    assert seen_ssh, "ps never saw the ssh git runs"
    assert all("IdentitiesOnly=yes" in line and "-F /dev/null" in line for line in seen_ssh)
    assert leftovers(ssh_dirs) == []

    db = settings.data_dir / "treecast.db"
    stored = b"".join(p.read_bytes() for p in db.parent.glob("treecast.db*"))
    for fragment in fragments:
        assert fragment.encode() not in stored
        assert fragment not in caplog.text
    for path in settings.data_dir.rglob("*"):
        if path.is_file() and "treecast.db" not in path.name:
            content = path.read_bytes()
            assert not any(f.encode() in content for f in fragments), path


def test_the_key_files_go_even_when_git_times_out(
    settings: Settings, deploy_key: tuple[Path, str], ssh_dirs: list[Path]
) -> None:
    quick = settings.model_copy(update={"git_timeout_seconds": 1.0})
    url_spec = CredentialSpec(ssh_private_key=deploy_key[1], known_hosts="ssh-ed25519 " + "A" * 68)
    with silent_server() as port:
        url = f"ssh://git@127.0.0.1:{port}/x.git"
        # At watch time (the check times out: nothing is saved) and in a sync.
        with pytest.raises(AccessRefused, match="did not answer"):
            register(offline(quick), url, url_spec)
        assert leftovers(ssh_dirs) == []
        with session_scope(settings.database_url) as session:
            repository, _ = register_repository(
                session, settings, keys.cipher(settings), url, "", None
            )
            watch = Watch(app_id=new_app_id(), repository_id=repository.id)
            planned = plan(settings, keys.cipher(settings), url, url_spec, None, comment="k")
            planned.stored.write_to(watch)
            session.add(
                App(id=watch.app_id, name="a", base_url="https://e.com", secrets_encrypted="-")
            )
            session.flush()
            session.add(watch)
        error = failure(quick, repository.id)
    assert error.type == GitErrorType.TIMEOUT
    assert leftovers(ssh_dirs) == []


def test_a_generated_key_is_printed_for_the_git_host_and_then_syncs(
    settings: Settings, server: SshServer, origin: WorkRepo
) -> None:
    service = offline(settings)
    info = register(
        service,
        server.url(origin.remote),
        CredentialSpec(generate_ssh_key=True, known_hosts=server.known_hosts()),
    )
    public = info.credentials.ssh_public_key
    assert public is not None and public.startswith("ssh-ed25519 ")
    assert failure(settings, info.repository_id).type == GitErrorType.AUTHENTICATION_FAILED
    [row] = (await_status(service, info.repository_id))["apps"]
    assert row["access"] == "pending"  # nothing is delivered with it yet
    server.authorize(public)  # the operator pastes it into the git host
    assert snapshot(settings, info.repository_id).file_count == 2
    [row] = (await_status(service, info.repository_id))["apps"]
    assert row["access"] == "granted"


def test_a_deploy_key_needs_pinned_host_keys_and_one_kind_of_credential(
    settings: Settings, server: SshServer, origin: WorkRepo, deploy_key: tuple[Path, str]
) -> None:
    service = offline(settings)
    url = server.url(origin.remote)
    with pytest.raises(UserError, match="host keys pinned"):
        register(service, url, CredentialSpec(ssh_private_key=deploy_key[1]))
    with pytest.raises(UserError, match="one kind of credential"):
        register(service, url, CredentialSpec(ssh_private_key=deploy_key[1], github_app_id="1"))
    with pytest.raises(UserError, match="ssh://"):
        register(service, "https://example.com/o/r", CredentialSpec(generate_ssh_key=True))
    with pytest.raises(UserError, match="no key for"):
        register(
            service,
            url,
            CredentialSpec(
                ssh_private_key=deploy_key[1], known_hosts="other.example ssh-ed25519 AAAA"
            ),
        )
    with pytest.raises(UserError, match="belong to an app's watch"):
        run(
            service.repositories.add(url, credentials=CredentialSpec(ssh_private_key=deploy_key[1]))
        )
    assert run(service.repositories.list()) == []


def test_known_hosts_forms() -> None:
    key_type = "ssh-ed25519"
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    salt = os.urandom(20)
    digest = hmac.new(salt, b"github.com", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    text = "\n".join(
        [
            "# comment",
            "@cert-authority *.example ssh-ed25519 AAAA",
            f"gitlab.com {key_type} {blob}",
            f"[git.example]:2222,other {key_type} {blob}",
            f"{hashed} {key_type} {blob}",
        ]
    )
    key = HostKey(key_type, blob)
    assert parse_known_hosts(text, "gitlab.com", 22) == (key,)
    assert parse_known_hosts(text, "git.example", 2222) == (key,)
    assert parse_known_hosts(text, "github.com", 22) == (key,)  # hashed
    with pytest.raises(ValueError, match=r"no key for git\.example"):
        parse_known_hosts(text, "git.example", 22)
    assert key.fingerprint == "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = starter.main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    from tests.conftest import free_port

    monkeypatch.setenv("TREECAST_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TREECAST_SECRET_KEY", settings.secret_key or "")
    monkeypatch.setenv("TREECAST_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    return settings


def test_scanned_host_keys_are_stored_only_once_confirmed(
    cli_env: Settings,
    server: SshServer,
    origin: WorkRepo,
    deploy_key: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.url(origin.remote)
    key_file = str(deploy_key[0])
    expected = HostKey.parse(server.host_public_key).fingerprint
    code, app, _ = run_cli(capsys, "app", "add", "--name", "a", "--url", "https://example.com/h")
    assert code == 0
    code, out, err = run_cli(
        capsys, "repo", "add", url, "--app", app["app_id"], "--ssh-key-file", key_file,
        "--scan-host-keys",
    )  # fmt: skip
    assert code == 2 and out["stored"] is False
    assert [k["fingerprint"] for k in out["host_keys"]] == [expected]
    assert "nothing stored" in err and f"--accept-host-keys {expected}" in err
    assert run(TreecastService(cli_env).repositories.list()) == []

    wrong = "SHA256:" + "A" * 43
    code, _, err = run_cli(
        capsys, "repo", "add", url, "--app", app["app_id"], "--ssh-key-file", key_file,
        "--scan-host-keys", "--accept-host-keys", wrong,
    )  # fmt: skip
    assert code == 2 and "did not offer" in err and expected in err
    assert run(TreecastService(cli_env).repositories.list()) == []

    code, _, err = run_cli(
        capsys, "repo", "add", url, "--app", app["app_id"], "--ssh-key-file", key_file,
        "--scan-host-keys", "--accept-host-keys", expected,
    )  # fmt: skip
    assert code == 3 and "is registered" in err  # no Temporal here: registered, not synced
    [repo] = run(TreecastService(cli_env).repositories.list())
    assert repo.credentials.host_key_fingerprints == [expected]
    assert snapshot(cli_env, repo.repository_id).file_count == 2

    # Rotation from the CLI: a new generated key, printed for the git host.
    code, out, _ = run_cli(
        capsys, "repo", "set-credentials", repo.repository_id, "--generate-ssh-key"
    )
    assert code == 0 and out["credentials"]["ssh_public_key"].startswith("ssh-ed25519 ")
    assert out["credentials"]["ssh_key_fingerprint"] != repo.credentials.ssh_key_fingerprint
    assert out["app_ids"] == [app["app_id"]] if "app_ids" in out else True
    code, out, _ = run_cli(
        capsys, "repo", "set-credentials", repo.repository_id, "--app", app["app_id"], "--clear"
    )
    assert code == 3  # saved; the sync request has no Temporal to go to
    assert (
        run(TreecastService(cli_env).repositories.get(repo.repository_id)).credentials.kind
        == "none"
    )


def test_a_person_at_a_terminal_confirms_scanned_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from treecast.cli.credentials import confirm_scanned
    from treecast.service.results import HostKeyInfo

    keys = [HostKeyInfo("ssh-ed25519", "SHA256:abc")]
    assert confirm_scanned(keys, interactive=False) is None  # no terminal: never stored
    assert confirm_scanned(keys, interactive=True, ask=lambda _: "no") is None
    assert confirm_scanned(keys, interactive=True, ask=lambda _: "yes") == ["SHA256:abc"]
    assert "SHA256:abc" in capsys.readouterr().err  # shown before the question
