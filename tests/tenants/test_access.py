"""Each app's own access, at the snapshot, against real git over smart HTTP with Basic auth:
the fetch falls back to the next app's credentials when the host refuses the ones it
used, each app due a check is asked about once per distinct credential, an app without
credentials is refused on a private repository, and an app whose access comes back is
delivered to again. A delivery reaches the host with the app's own credentials only: a
private submodule another app's token reads is held back for an app whose token does
not."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from activities.git import GitActivities
from activities.watches import WatchActivities
from examples.receiver import Receiver
from models.delivery import AppDelivery, DeliverInput, WatchersInput, WatchersResult
from models.git import SnapshotInput, SnapshotResult
from models.tables import Repository, Watch, WatchAccess, WatchStatus, utcnow
from tests.support.githttp import GitHttpServer, git_http_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.receiver_fixture import add_watch
from treecast.access import Verdict, probe
from treecast.config import Settings
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.gitcache.command import Credentials

REPO = "repo_" + "a" * 24
SECRET = generate_webhook_secret()


@pytest.fixture
def origin(tmp_path: Path) -> WorkRepo:
    origin = WorkRepo(tmp_path / "git" / "o")
    origin.commit_files({"README.md": "private\n"})
    return origin


@pytest.fixture
def host(tmp_path: Path, origin: WorkRepo) -> Iterator[GitHttpServer]:
    with git_http_server(tmp_path / "git", "token-a") as server:
        server.tokens.update({"token-b", "shared"})
        yield server


def watcher(settings: Settings, token: str | None) -> str:
    return add_watch(
        settings, "https://example.com/hooks", [generate_webhook_secret()], REPO, token=token
    )


def snapshot(settings: Settings) -> SnapshotResult:
    result = ActivityEnvironment().run(
        GitActivities(settings).snapshot_repository, SnapshotInput(REPO)
    )
    assert isinstance(result, SnapshotResult)
    return result


def state(settings: Settings, app_id: str) -> Watch:
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, REPO))
        assert watch is not None
        return watch


def fetched_with(settings: Settings) -> str | None:
    with session_scope(settings.database_url) as session:
        repository = session.get(Repository, REPO)
        assert repository is not None
        return repository.fetched_with


def listings(host: GitHttpServer) -> int:
    """Ref listings the host answered (a fetch's or a check's: `info/refs`)."""
    return sum(1 for _, path, _ in host.requests if "info/refs" in path)


def test_each_app_is_checked_with_its_own_credentials(
    settings: Settings, host: GitHttpServer
) -> None:
    with session_scope(settings.database_url) as session:
        session.add(Repository(id=REPO, url=host.url("o/remote.git"), ref=""))
    a, b, c = watcher(settings, "token-a"), watcher(settings, "token-b"), watcher(settings, None)
    d, e = watcher(settings, "shared"), watcher(settings, "shared")
    with session_scope(settings.database_url) as session:
        repository = session.get(Repository, REPO)
        assert repository is not None
        repository.fetched_with = a  # the app whose credentials fetch first
    first = snapshot(settings)
    fetcher = fetched_with(settings)
    assert fetcher == a
    # C has no credentials and the repository does not answer anonymously: refused, and
    # told (it had access until now, as far as Treecast knew).
    assert first.refused_app_ids == [c]
    refused = state(settings, c)
    assert refused.access == WatchAccess.REFUSED and refused.status == WatchStatus.FAILED
    assert refused.last_error_type == "AccessRefused" and "no longer" in (refused.last_error or "")
    for app in (a, b, d, e):
        assert state(settings, app).access == WatchAccess.GRANTED
    # D and E hold the same token: one ls-remote (a listing and its ls-refs) for both.
    shared = "Basic " + base64.b64encode(b"x-access-token:shared").decode()
    assert host.auth_headers.count(shared) == 2

    listed = ActivityEnvironment().run(
        WatchActivities(settings).list_watchers, WatchersInput(REPO, first.commit)
    )
    assert isinstance(listed, WatchersResult)
    assert c not in listed.app_ids and c not in listed.behind_app_ids
    assert sorted(listed.app_ids) == sorted([a, b, d, e])

    # Nobody is due a check a moment later: the next snapshot is its fetch alone.
    before = listings(host)
    assert snapshot(settings).refused_app_ids == []
    assert listings(host) - before == 1

    # The host drops A's token, the one fetching: the fetch moves to another app's at once,
    # and A loses its access (one notice); the others keep theirs.
    host.token = None
    result = snapshot(settings)
    assert result.refused_app_ids == [a]
    assert fetched_with(settings) in (b, d, e)
    assert state(settings, a).access == WatchAccess.REFUSED
    assert state(settings, b).access == WatchAccess.GRANTED

    # Its access comes back on the host: at its next check it is delivered to again.
    host.token = "token-a"
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (a, REPO))
        assert watch is not None
        watch.access_checked_at = utcnow() - timedelta(hours=2)  # one full sync ago
    assert snapshot(settings).refused_app_ids == []
    back = state(settings, a)
    assert back.access == WatchAccess.GRANTED and back.status == WatchStatus.PENDING


def test_a_new_commit_goes_only_to_apps_whose_access_holds_now(
    settings: Settings, host: GitHttpServer, origin: WorkRepo
) -> None:
    """An app checked a moment ago is not due a check, but a new commit is new content: each
    app's access is asked again before the commit is handed to delivery, so an app whose
    token the host revoked since its last check never receives the new files."""
    with session_scope(settings.database_url) as session:
        session.add(Repository(id=REPO, url=host.url("o/remote.git"), ref=""))
    a, b = watcher(settings, "token-a"), watcher(settings, "token-b")
    with session_scope(settings.database_url) as session:
        repository = session.get(Repository, REPO)
        assert repository is not None
        repository.fetched_with = a  # A's token fetches; B's is only ever checked
    first = snapshot(settings)
    assert first.refused_app_ids == [] and fetched_with(settings) == a
    assert state(settings, b).access == WatchAccess.GRANTED

    # B's token is revoked on the host; the same commit again: nothing new, nobody is due
    # a check, so the snapshot is its fetch alone (B's verdict waits for its due time).
    host.tokens.discard("token-b")
    before = listings(host)
    assert snapshot(settings).refused_app_ids == []
    assert listings(host) - before == 1

    # A new commit: B is asked at once and refused, and is not among those delivered to.
    origin.write("new.md", "only for apps that still read it\n")
    origin.commit("new")
    second = snapshot(settings)
    assert second.commit != first.commit
    assert second.refused_app_ids == [b]
    assert state(settings, b).access == WatchAccess.REFUSED
    assert state(settings, a).access == WatchAccess.GRANTED
    listed = ActivityEnvironment().run(
        WatchActivities(settings).list_watchers, WatchersInput(REPO, second.commit)
    )
    assert isinstance(listed, WatchersResult)
    assert listed.app_ids == [a] and b not in listed.behind_app_ids

    # A refused app is not asked again at every commit (only when due or its credentials
    # change): the next new commit costs the fetch alone.
    origin.write("newer.md", "later\n")
    origin.commit("newer")
    before = listings(host)
    assert snapshot(settings).refused_app_ids == []
    assert listings(host) - before == 1


def test_a_probe_tells_a_refusal_from_no_answer(settings: Settings, host: GitHttpServer) -> None:
    url = host.url("o/remote.git")
    assert probe(settings, url, "", Credentials("token-a")).verdict == Verdict.GRANTED
    assert probe(settings, url, "main", Credentials("token-b")).verdict == Verdict.GRANTED
    # A commit id is never listed: the question is the access, so HEAD is asked for.
    assert probe(settings, url, "0" * 40, Credentials("token-a")).verdict == Verdict.GRANTED
    refused = probe(settings, url, "", Credentials("wrong"))
    assert refused.verdict == Verdict.REFUSED and refused.error_type == "AuthenticationFailed"
    assert "wrong" not in (refused.message or "")
    assert probe(settings, url, "", None).verdict == Verdict.REFUSED
    from tests.support.githttp import silent_server

    with silent_server() as port:
        quiet = probe(settings, f"http://127.0.0.1:{port}/r.git", "", None, timeout=1.0)
    assert quiet.verdict == Verdict.UNKNOWN and quiet.error_type == "GitTimeout"


def test_a_private_submodule_goes_only_to_apps_whose_own_token_reads_it(
    settings: Settings, tmp_path: Path
) -> None:
    """Both apps' tokens read the repository; only A's reads its submodule (same host, a
    relative URL). A is delivered to first, so the submodule's commit is in a cache by
    then: B must neither be sent A's token nor read what A's fetched."""
    root = tmp_path / "git"
    sub = WorkRepo(root / "sub")
    sub.write("secret.md", "only for A\n")
    pinned = sub.commit("sub")
    parent = WorkRepo(root / "parent")
    parent.write("README.md", "shared\n")
    parent.write(
        ".gitmodules",
        '[submodule "vendor/sub"]\n\tpath = vendor/sub\n\turl = ../../sub/remote.git\n',
    )
    git(parent.work, "add", "-A")
    git(parent.work, "update-index", "--add", "--cacheinfo", f"160000,{pinned},vendor/sub")
    git(parent.work, "commit", "-q", "-m", "parent")  # not `add -A`: it would drop the link
    git(parent.work, "push", "-q", "origin", "HEAD:refs/heads/main")
    commit = git(parent.work, "rev-parse", "HEAD")
    with (
        git_http_server(root, "token-a") as host,
        Receiver([SECRET], tmp_path / "a") as to_a,
        Receiver([SECRET], tmp_path / "b") as to_b,
    ):
        host.tokens.add("token-b")
        host.scoped_out["token-b"] = {"/sub/"}
        with session_scope(settings.database_url) as session:
            session.add(Repository(id=REPO, url=host.url("parent/remote.git"), ref=""))
        a = add_watch(settings, to_a.url, [SECRET], REPO, token="token-a")
        b = add_watch(settings, to_b.url, [SECRET], REPO, token="token-b")
        with session_scope(settings.database_url) as session:
            for app in (a, b):
                watch = session.get(Watch, (app, REPO))
                assert watch is not None
                watch.submodules = "shallow"
        assert snapshot(settings).commit == commit
        for app in (a, b):
            delivered = ActivityEnvironment().run(
                DeliveryActivities(settings).deliver_changes, DeliverInput(app, REPO, commit)
            )
            assert isinstance(delivered, AppDelivery) and delivered.status == "synced"
    assert state(settings, a).held_back is None
    shared = {"README.md": b"shared\n", ".gitmodules": (parent.work / ".gitmodules").read_bytes()}
    assert to_a.files() == {**shared, "vendor/sub/secret.md": b"only for A\n"}
    assert to_b.files() == shared
    assert "submodule vendor/sub held back" in (state(settings, b).held_back or "")
    # B's delivery asked the host with B's token (and was refused), never with A's after
    # A's delivery was done.
    asked = [password for path, password in host.asked if path.startswith("/sub/")]
    assert "token-b" in asked and asked[asked.index("token-b") :].count("token-a") == 0
