"""The docora signing scheme and `import-docora`, against real PostgreSQL databases.

Docora's schema is written from its spec (section 1.2), its secrets encrypted as Docora
does (AES-256-GCM, 16-byte IV, `iv:tag:ciphertext` hex) and its tokens bcrypt-hashed;
deliveries go through the activity to `tests/support/docora_receiver.py`, which checks Docora's
signature, headers, key order and content hashes from the spec alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from activities.notices import NoticeActivities
from models.delivery import AppDelivery, BreakerInfo, DeliverInput, NoticeInput
from models.events import SyncEvent
from models.tables import App, DeliveredFile, Repository, Watch
from tests.support.docora_receiver import DocoraReceiver, expected_signature
from tests.support.gitrepos import WorkRepo
from tests.support.registering import offline
from treecast.config import Settings
from treecast.crypto import Cipher
from treecast.db import create_schema, engine_for, session_scope
from treecast.service import docora_tokens
from treecast.service.core import run
from treecast.service.docora_import import docora_encrypt
from treecast.service.errors import Unauthorized, UserError
from treecast.webhooks import payloads
from treecast.webhooks.signing import docora_signature

DOCORA_SCHEMA = """
CREATE TABLE apps (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id varchar(50) NOT NULL UNIQUE,
    token_hash varchar(255) NOT NULL,
    app_name varchar(100) NOT NULL,
    base_url varchar(2048) NOT NULL,
    email varchar(255) NOT NULL,
    website varchar(2048),
    description varchar(500),
    created_at timestamptz NOT NULL DEFAULT NOW(),
    updated_at timestamptz NOT NULL DEFAULT NOW(),
    client_auth_key_encrypted varchar(500) NOT NULL
);
CREATE INDEX idx_apps_app_id ON apps (app_id);
CREATE INDEX idx_apps_token_hash ON apps (token_hash);
CREATE TABLE repositories (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    repository_id varchar(50) NOT NULL UNIQUE,
    github_url varchar(2048) NOT NULL UNIQUE,
    owner varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    is_private boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT NOW(),
    updated_at timestamptz NOT NULL DEFAULT NOW(),
    consecutive_failures integer NOT NULL DEFAULT 0,
    circuit_open_until timestamptz
);
CREATE TABLE app_repositories (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id varchar(50) NOT NULL REFERENCES apps (app_id),
    repository_id varchar(50) NOT NULL REFERENCES repositories (repository_id),
    github_token_encrypted varchar(500),
    created_at timestamptz NOT NULL DEFAULT NOW(),
    status varchar(50) NOT NULL DEFAULT 'pending_snapshot',
    retry_count integer NOT NULL DEFAULT 0,
    last_error text,
    last_scanned_at timestamptz,
    CONSTRAINT uq_app_repositories_app_repo UNIQUE (app_id, repository_id)
);
CREATE TABLE repository_snapshots (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    repository_id varchar(50) NOT NULL UNIQUE REFERENCES repositories (repository_id),
    commit_sha varchar(40) NOT NULL,
    branch varchar(255) NOT NULL DEFAULT 'main',
    scanned_at timestamptz NOT NULL DEFAULT NOW()
);
CREATE TABLE snapshot_files (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    snapshot_id uuid NOT NULL REFERENCES repository_snapshots (id) ON DELETE CASCADE,
    path varchar(2048) NOT NULL,
    sha varchar(64) NOT NULL,
    size integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT NOW()
);
CREATE TABLE app_delivered_files (
    app_id varchar(36) NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    repository_id varchar(36) NOT NULL REFERENCES repositories (repository_id) ON DELETE CASCADE,
    file_path varchar(1024) NOT NULL,
    file_sha varchar(64) NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT pk_app_delivered_files PRIMARY KEY (app_id, repository_id, file_path)
);
"""

KEY_HEX = secrets.token_hex(32)
CLIENT_AUTH_KEY = "test-client-auth-key-0001"


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def fresh_database(server_url: str, prefix: str) -> str:
    """A new empty database on the tests' PostgreSQL server; its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


class Docora:
    """A Docora database with one app watching one repository."""

    def __init__(self, url: str, repo_url: str, base_url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        with self.engine.begin() as connection:
            for statement in DOCORA_SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(text(statement))
        self.app_id = "app_" + secrets.token_hex(12)
        self.repository_id = "repo_" + secrets.token_hex(12)
        self.token = "docora_" + secrets.token_hex(32)
        key = bytes.fromhex(KEY_HEX)
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO apps (app_id, token_hash, app_name, base_url, email,"
                    " client_auth_key_encrypted) VALUES (:a, :h, 'docs site', :u,"
                    " 'ops@example.com', :k)"
                ),
                {
                    "a": self.app_id,
                    # Docora uses cost 12; 4 keeps the tests quick, the format is the same.
                    "h": bcrypt.hashpw(self.token.encode(), bcrypt.gensalt(4)).decode(),
                    "u": base_url,
                    "k": docora_encrypt(key, CLIENT_AUTH_KEY, os.urandom(16)),
                },
            )
            connection.execute(
                text(
                    "INSERT INTO repositories (repository_id, github_url, owner, name)"
                    " VALUES (:r, :g, 'acme', 'docs')"
                ),
                {"r": self.repository_id, "g": repo_url},
            )
            connection.execute(
                text(
                    "INSERT INTO app_repositories (app_id, repository_id, github_token_encrypted,"
                    " status, retry_count, last_error, last_scanned_at)"
                    " VALUES (:a, :r, :t, 'failed', 5, 'Notification failed for update b.md',"
                    " NOW())"
                ),
                {
                    "a": self.app_id,
                    "r": self.repository_id,
                    "t": docora_encrypt(key, "ghp_" + "x" * 36, os.urandom(16)),
                },
            )

    def deliver(self, path: str, content: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO app_delivered_files (app_id, repository_id, file_path, file_sha)"
                    " VALUES (:a, :r, :p, :s)"
                ),
                {"a": self.app_id, "r": self.repository_id, "p": path, "s": sha(content)},
            )


@pytest.fixture
def pg_settings(settings: Settings, postgres_url: str) -> Settings:
    url = fresh_database(postgres_url, "treecast")
    create_schema(engine_for(url))
    return settings.model_copy(update={"database_url": url})


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    return WorkRepo(tmp_path / "repo")


@pytest.fixture
def receiver() -> Iterator[DocoraReceiver]:
    # The app id is set once the Docora database is made.
    instance = DocoraReceiver("", CLIENT_AUTH_KEY).start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def docora(postgres_url: str, repo: WorkRepo, receiver: DocoraReceiver) -> Docora:
    made = Docora(fresh_database(postgres_url, "docora"), repo.url, receiver.url)
    receiver.app_id = made.app_id
    return made


def rows(settings: Settings) -> dict[str, list[Any]]:
    """Every imported table's rows, comparable across imports (no ciphertexts)."""
    with session_scope(settings.database_url) as session:
        return {
            "apps": [
                (a.id, a.name, a.base_url, a.signing_scheme, a.docora_token_hash)
                for a in session.exec(select(App).order_by(App.id)).all()
            ],
            "repositories": [(r.id, r.url, r.ref) for r in session.exec(select(Repository)).all()],
            "watches": [
                (w.app_id, w.repository_id, w.status, w.retry_count, w.last_error)
                for w in session.exec(select(Watch)).all()
            ],
            # Docora knows no submodules or LFS: imported watches keep them off.
            "watch_options": [(w.submodules, w.lfs) for w in session.exec(select(Watch)).all()],
            "ledger": sorted(
                (d.path, d.blob_id, d.sha256) for d in session.exec(select(DeliveredFile)).all()
            ),
        }


def deliver(settings: Settings, app_id: str, repository_id: str, commit: str) -> AppDelivery:
    result = ActivityEnvironment().run(
        DeliveryActivities(settings).deliver_changes, DeliverInput(app_id, repository_id, commit)
    )
    assert isinstance(result, AppDelivery)
    return result


# -- the wire format ---------------------------------------------------------------------


def test_signature_matches_the_spec_test_vector() -> None:
    body = (
        '{"repository":{"repository_id":"repo_0123456789abcdef01234567",'
        '"github_url":"https://github.com/acme/docs","owner":"acme","name":"docs"},'
        '"file":{"path":"guide/intro.md",'
        '"sha":"f47b230efab6fd0325c4581791d4615c6624d6611efd692a1a3e9955b36d36da",'
        '"size":27,"content":"# Héllo\\n\\tworld \u2028 \\"q\\" /x\\n"},'
        '"commit_sha":"89abcdef0123456789abcdef0123456789abcdef",'
        '"timestamp":"2026-01-02T03:04:05.678Z"}'
    ).encode()
    expected = "sha256=20b87f2eefd3233710d79691088f2000f1cacdcc96723d6ed57f143173ef85e7"
    assert docora_signature(CLIENT_AUTH_KEY, 1767323045, body) == expected
    assert expected_signature(CLIENT_AUTH_KEY, "1767323045", body) == expected
    # And Treecast builds exactly those bytes for a docora app.
    repo = payloads.RepositoryRef(
        "repo_0123456789abcdef01234567",
        "https://github.com/acme/docs",
        "acme",
        "docs",
        None,
        docora=True,
    )
    built = payloads.file_body(
        event="create",
        repo=repo,
        path="guide/intro.md",
        sha="f47b230efab6fd0325c4581791d4615c6624d6611efd692a1a3e9955b36d36da",
        size=27,
        content='# Héllo\n\tworld \u2028 "q" /x\n',
        base64=False,
        commit_sha="89abcdef0123456789abcdef0123456789abcdef",
        timestamp="2026-01-02T03:04:05.678Z",
    )
    assert built == body


def test_docora_chunking_never_chunks_text() -> None:
    big = 5 * 1024 * 1024
    assert not payloads.plan_chunks_docora(big, True, 1048576, 524288).chunked
    assert not payloads.plan_chunks_docora(1048576, False, 1048576, 524288).chunked
    plan = payloads.plan_chunks_docora(3 * 1048576, False, 1048576, 524288)
    assert (plan.chunked, plan.total) == (True, 8)  # the spec's example: 3 MiB -> 8 chunks


# -- the import, end to end ----------------------------------------------------------------


def test_import_then_first_sync_sends_only_what_changed(
    pg_settings: Settings, repo: WorkRepo, docora: Docora, receiver: DocoraReceiver
) -> None:
    # What Docora delivered: a.md and b.md (old content) and old.md.
    docora.deliver("a.md", "alpha\n")
    docora.deliver("b.md", "bravo, as Docora sent it\n")
    docora.deliver("old.md", "removed since\n")
    repo.write("a.md", "alpha\n")
    repo.write("b.md", "bravo, changed after Docora\n")
    repo.write("c.md", "charlie, new\n")
    repo.write("img/logo.bin", bytes(range(256)) * 4)
    commit = repo.commit("after Docora")
    service = offline(pg_settings)

    dry = run(service.admin.import_docora(docora.url, KEY_HEX, dry_run=True))
    assert dry.dry_run and dry.apps == [docora.app_id] and dry.ledger_rows == 3
    assert rows(pg_settings)["apps"] == []  # nothing written

    report = run(service.admin.import_docora(docora.url, KEY_HEX))
    assert (report.apps, report.repositories) == ([docora.app_id], [docora.repository_id])
    assert report.watches == [f"{docora.app_id} {docora.repository_id}"]
    assert report.ledger_rows == 3 and report.skipped == []
    imported = rows(pg_settings)
    assert imported["apps"][0][3] == "docora"
    assert imported["watches"] == [
        (docora.app_id, docora.repository_id, "failed", 5, "Notification failed for update b.md")
    ]
    assert imported["watch_options"] == [(None, None)]
    assert {p for p, blob, _ in imported["ledger"] if blob == ""} == {"a.md", "b.md", "old.md"}
    # Docora's per-app GitHub token is that app's watch's, never the repository's.
    cipher = Cipher(pg_settings.secret_key or "")
    with session_scope(pg_settings.database_url) as session:
        watch = session.get(Watch, (docora.app_id, docora.repository_id))
        repository = session.get(Repository, docora.repository_id)
        assert watch is not None and repository is not None
        assert cipher.decrypt(watch.token_encrypted or "") == "ghp_" + "x" * 36
        assert repository.token_encrypted is None

    result = deliver(pg_settings, docora.app_id, docora.repository_id, commit)
    assert receiver.problems == []
    assert (result.status, result.created, result.updated, result.deleted) == ("synced", 2, 1, 1)
    sent = [(r.endpoint, r.payload["file"]["path"]) for r in receiver.received]
    assert sent == [
        ("delete", "old.md"),
        ("create", "c.md"),
        ("create", "img/logo.bin"),
        ("update", "b.md"),
    ]
    update = receiver.received[-1].payload
    assert update["previous_sha"] == sha("bravo, as Docora sent it\n")
    assert update["repository"] == {
        "repository_id": docora.repository_id,
        "github_url": repo.url,
        "owner": imported["repositories"][0][1].rstrip("/").split("/")[-2],
        "name": imported["repositories"][0][1].rstrip("/").split("/")[-1],
    }
    assert receiver.received[0].payload["file"] == {"path": "old.md", "sha": sha("removed since\n")}
    assert receiver.received[2].payload["file"]["content_encoding"] == "base64"
    headers = receiver.received[0].headers
    assert headers["x-docora-app-id"] == docora.app_id
    assert "webhook-id" not in headers and "webhook-signature" not in headers
    # The unchanged imported row now has its blob id; nothing is left without one.
    after = rows(pg_settings)["ledger"]
    assert [p for p, blob, _ in after] == ["a.md", "b.md", "c.md", "img/logo.bin"]
    assert all(blob for _, blob, _ in after)

    # A second sync at the same commit sends nothing.
    again = deliver(pg_settings, docora.app_id, docora.repository_id, commit)
    assert (again.created, again.updated, again.deleted) == (0, 0, 0)
    assert len(receiver.received) == 4


def test_second_import_changes_nothing(pg_settings: Settings, docora: Docora) -> None:
    docora.deliver("a.md", "alpha\n")
    service = offline(pg_settings)
    first = run(service.admin.import_docora(docora.url, KEY_HEX))
    assert first.changed
    before = rows(pg_settings)
    second = run(service.admin.import_docora(docora.url, KEY_HEX))
    assert not second.changed
    assert second.already_present == 4  # app, repository, watch, one delivered file
    assert rows(pg_settings) == before


def test_wrong_key_is_refused_before_writing(pg_settings: Settings, docora: Docora) -> None:
    docora.deliver("a.md", "alpha\n")
    service = offline(pg_settings)
    with pytest.raises(UserError, match="does not decrypt Docora's secrets") as refused:
        run(service.admin.import_docora(docora.url, secrets.token_hex(32)))
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match="64 hex characters"):
        run(service.admin.import_docora(docora.url, "not-a-key"))
    assert rows(pg_settings) == {
        "apps": [],
        "repositories": [],
        "watches": [],
        "watch_options": [],
        "ledger": [],
    }


def test_imported_token_authenticates(pg_settings: Settings, docora: Docora) -> None:
    service = offline(pg_settings)
    run(service.admin.import_docora(docora.url, KEY_HEX))
    docora_tokens.forget_refusals()
    wrong = "docora_" + secrets.token_hex(32)
    with pytest.raises(Unauthorized):
        run(service.apps.authenticate(wrong))
    assert run(service.apps.authenticate(docora.token)) == docora.app_id
    with session_scope(pg_settings.database_url) as session:
        app = session.get(App, docora.app_id)
        assert app is not None
        assert app.docora_token_sha256 == docora_tokens.token_sha256(docora.token)
    # From now on an indexed lookup: the bcrypt hash is no longer consulted.
    assert run(service.apps.authenticate(docora.token)) == docora.app_id
    with pytest.raises(Unauthorized):
        run(service.apps.authenticate(wrong))
    # A Treecast token can be issued alongside; both work.
    token = run(service.apps.rotate_token(docora.app_id))
    assert run(service.apps.authenticate(token)) == docora.app_id
    assert run(service.apps.authenticate(docora.token)) == docora.app_id


def test_docora_app_gets_docora_sync_failed_and_no_sync_recovered(
    pg_settings: Settings, docora: Docora, receiver: DocoraReceiver
) -> None:
    service = offline(pg_settings)
    run(service.admin.import_docora(docora.url, KEY_HEX))
    breaker = BreakerInfo(
        status="open",
        consecutive_failures=5,
        threshold=5,
        cooldown_until="2026-01-02T03:34:05+00:00",
    )
    env = ActivityEnvironment()
    notices = NoticeActivities(pg_settings)
    failed = NoticeInput(
        app_id=docora.app_id,
        repository_id=docora.repository_id,
        event=SyncEvent.SYNC_FAILED,
        transition_id="t1",
        breaker=breaker,
        error_type="AuthenticationFailed",
        error_message="git could not authenticate",
    )
    assert env.run(notices.send_notice, failed).delivered
    recovered = replace(failed, event=SyncEvent.SYNC_RECOVERED, transition_id="t2")
    assert not env.run(notices.send_notice, recovered).delivered
    assert receiver.problems == []
    assert [r.endpoint for r in receiver.received] == ["sync_failed"]
    body = receiver.received[0].payload
    assert body["error"] == {"type": "git_failure", "message": "git could not authenticate"}
    assert body["retry_count"] == 5
    assert body["circuit_breaker"]["cooldown_until"] == "2026-01-02T03:34:05.000Z"
    # Asked for, it is sent (Docora has no such endpoint: this spec-only receiver says 404).
    run(service.apps.update(docora.app_id, treecast_events=True))
    with pytest.raises(ApplicationError, match="404"):
        env.run(notices.send_notice, replace(recovered, transition_id="t3"))
    assert receiver.problems == ["/hooks/sync_recovered: unknown endpoint /hooks/sync_recovered"]


def test_cli_app_add_and_update_scheme(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import starter

    monkeypatch.setenv("TREECAST_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("TREECAST_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TREECAST_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TREECAST_SECRET_KEY", settings.secret_key or "")
    monkeypatch.setenv("DOCS_KEY", CLIENT_AUTH_KEY)
    code = starter.main(
        [
            "app",
            "add",
            "--name",
            "docs",
            "--url",
            "http://127.0.0.1:9/hooks",
            "--scheme",
            "docora",
            "--client-auth-key-env",
            "DOCS_KEY",
            "--json",
        ]
    )
    assert code == 0
    app_id = json.loads(capsys.readouterr().out)["app_id"]
    with session_scope(settings.database_url) as session:
        app = session.get(App, app_id)
        assert app is not None and app.signing_scheme == "docora"
        assert CLIENT_AUTH_KEY not in (app.client_auth_key_encrypted or "")
    assert starter.main(["app", "update", app_id, "--scheme", "standard-webhooks"]) == 0
    assert "signs with standard-webhooks" in capsys.readouterr().out
    # The docora scheme without a key is refused in one line.
    code = starter.main(
        ["app", "add", "--name", "x", "--url", "http://127.0.0.1:9/h", "--scheme", "docora"]
    )
    assert code == 2
    assert "client_auth_key" in capsys.readouterr().err


def test_cli_import_dry_run_reports_what_it_cannot_then_imports_once(
    pg_settings: Settings,
    docora: Docora,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import starter

    # A second app whose key was encrypted with another ENCRYPTION_KEY, and one whose
    # base URL Treecast refuses: both reported, the first app imported.
    other = bytes.fromhex(secrets.token_hex(32))
    with docora.engine.begin() as connection:
        for app_id, base_url, key in (
            ("app_" + "a" * 24, "https://example.com/a", other),
            ("app_" + "b" * 24, "ftp://example.com/b", bytes.fromhex(KEY_HEX)),
        ):
            connection.execute(
                text(
                    "INSERT INTO apps (app_id, token_hash, app_name, base_url, email,"
                    " client_auth_key_encrypted) VALUES (:a, 'x', 'other', :u, 'o@e.com', :k)"
                ),
                {"a": app_id, "u": base_url, "k": docora_encrypt(key, CLIENT_AUTH_KEY, b"\0" * 16)},
            )
    monkeypatch.setenv("TREECAST_DATA_DIR", str(pg_settings.data_dir))
    monkeypatch.setenv("TREECAST_DATABASE_URL", pg_settings.database_url)
    monkeypatch.setenv("TREECAST_SECRET_KEY", pg_settings.secret_key or "")
    monkeypatch.setenv("TREECAST_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("TREECAST_ALLOW_FILE_URLS", "1")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("DOCORA_KEY", KEY_HEX)
    monkeypatch.setenv("WRONG_KEY", secrets.token_hex(32))
    argv = ["import-docora", "--database-url", docora.url, "--encryption-key-env"]

    assert starter.main([*argv, "WRONG_KEY"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not decrypt Docora's secrets" in err
    assert KEY_HEX not in err

    assert starter.main([*argv, "DOCORA_KEY", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would import 1 apps, 1 repositories, 1 watches, 0 delivered files")
    assert f"cannot import app app_{'a' * 24} client_auth_key: its encrypted value" in out
    assert f"cannot import app app_{'b' * 24}: base URL refused" in out
    assert rows(pg_settings)["apps"] == []

    assert starter.main([*argv, "DOCORA_KEY", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["apps"] == [docora.app_id] and first["repositories"] == [docora.repository_id]
    before = rows(pg_settings)
    assert starter.main([*argv, "DOCORA_KEY", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["apps"], second["repositories"], second["watches"]) == ([], [], [])
    assert rows(pg_settings) == before


def test_docora_app_chunks_binaries_only(
    pg_settings: Settings, repo: WorkRepo, docora: Docora, receiver: DocoraReceiver
) -> None:
    small = pg_settings.model_copy(update={"chunk_threshold_bytes": 4096, "chunk_size_bytes": 1024})
    blob = os.urandom(5000)
    text_file = "x" * 9000 + "\n"
    repo.write("big.bin", blob)
    repo.write("big.md", text_file)
    commit = repo.commit("large files")
    run(offline(small).admin.import_docora(docora.url, KEY_HEX))
    result = deliver(small, docora.app_id, docora.repository_id, commit)
    assert result.created == 2 and receiver.problems == []
    sent = [r.payload["file"] for r in receiver.received]
    chunks = [f for f in sent if f["path"] == "big.bin"]
    assert [c["chunk"]["index"] for c in chunks] == list(range(7))  # 5000 bytes / 768
    assert {c["chunk"]["total"] for c in chunks} == {7}
    assert b"".join(base64.b64decode(c["content"]) for c in chunks) == blob
    whole = [f for f in sent if f["path"] == "big.md"]
    assert len(whole) == 1 and whole[0]["content"] == text_file and "chunk" not in whole[0]
