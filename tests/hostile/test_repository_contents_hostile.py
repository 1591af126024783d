"""Hostile submodules and LFS pointers: each refused or held back with a clear status
line, nothing run, nothing wrong delivered, the rest of the commit delivered."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpcore
import pytest
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from examples.receiver import Receiver
from models.contents import SubmoduleMode
from models.delivery import AppDelivery, DeliverInput
from models.tables import Watch
from tests.support.contents_world import World, content_world, needs_git_lfs
from tests.support.gitrepos import WorkRepo, git
from tests.support.receiver_fixture import register
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.contents import WatchOptions
from treecast.delivery.lfs import LfsFetcher, LfsRefused
from treecast.delivery.loading import contents_at
from treecast.gitcache.lfs import Pointer
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.submodules import resolve_url, submodule_access
from treecast.webhooks.transport import GuardedBackend

BIG = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 10737418240\n"


def deliver(settings: Settings, app_id: str, repository_id: str, commit: str) -> AppDelivery:
    result = ActivityEnvironment().run(
        DeliveryActivities(settings).deliver_changes, DeliverInput(app_id, repository_id, commit)
    )
    assert isinstance(result, AppDelivery)
    return result


def set_options(settings: Settings, app_id: str, repository_id: str, **options: Any) -> None:
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        for key, value in options.items():
            setattr(watch, key, value)
        session.add(watch)


def held_back(settings: Settings, app_id: str, repository_id: str) -> list[str]:
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        return list(json.loads(watch.held_back or "[]"))


@pytest.fixture
def strict(settings: Settings) -> Settings:
    """No private or loopback address; file:// allowed (the parent is a local remote)."""
    return settings.model_copy(update={"allow_private_urls": False})


def hostile_parent(tmp_path: Path, *, metadata: bool) -> tuple[WorkRepo, str, Path]:
    """A repository whose `.gitmodules` names every hostile URL (and an escaping path)."""
    repo = WorkRepo(tmp_path / "parent")
    repo.write("README.md", "hello\n")
    first = repo.commit("first")
    pwned = tmp_path / "pwned"
    modules = {
        "ext": f"ext::sh -c touch% {pwned}",
        "etc": "file:///etc",
        "option": "-uhelp",
        "escape": "../" * 40 + "elsewhere",
        "loop": "../remote.git",
    }
    if metadata:
        modules["metadata"] = "http://169.254.169.254/latest"
    text = "".join(
        f'[submodule "{name}"]\n\tpath = sub/{name}\n\turl = {url}\n'
        for name, url in modules.items()
    )
    text += '[submodule "out"]\n\tpath = ../../etc/passwd\n\turl = ../x\n'
    repo.write(".gitmodules", text)
    git(repo.work, "add", ".gitmodules")
    for name in modules:
        git(repo.work, "update-index", "--add", "--cacheinfo", f"160000,{first},sub/{name}")
    # Committed as staged (`add -A` would drop gitlinks that have no folder here).
    git(repo.work, "commit", "-q", "-m", "hostile submodules")
    git(repo.work, "push", "-q", "origin", "HEAD:refs/heads/main")
    return repo, git(repo.work, "rev-parse", "HEAD"), pwned


HOSTILE_REASONS = {
    "ext": "names a git remote helper",
    "etc": "does not appear to be a git repository",
    "option": "starts with '-'",
    "escape": "climbs above the parent's host",
    "loop": "a loop",
    "metadata": "private or loopback address 169.254.169.254",
}


def check_reasons(held: list[str], names: list[str]) -> None:
    for name in names:
        line = next(line for line in held if f"sub/{name} " in line)
        assert HOSTILE_REASONS[name] in line, line
    assert any(".gitmodules path refused" in line for line in held)


def test_hostile_submodule_urls_are_refused_by_the_url_policy(
    strict: Settings, tmp_path: Path
) -> None:
    repo, commit, pwned = hostile_parent(tmp_path, metadata=True)
    access = RemoteAccess("repo_hostile", repo.url, "", None)
    cache = RepositoryCache(strict, access.repository_id)
    options = WatchOptions(SubmoduleMode.RECURSIVE)
    contents = contents_at(cache, access, commit, None, [], options)
    assert set(contents.candidates.files) == {"README.md", ".gitmodules"}
    check_reasons(list(contents.candidates.held.values()), list(HOSTILE_REASONS))
    assert not pwned.exists()


def test_hostile_submodules_are_held_back_and_the_rest_delivered(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    repo, commit, pwned = hostile_parent(tmp_path, metadata=False)
    app_id, repository_id = register(settings, receiver.url, [receiver_secret], repo.url)
    set_options(settings, app_id, repository_id, submodules="recursive")
    result = deliver(settings, app_id, repository_id, commit)
    assert result.status == "synced"
    assert set(receiver.files()) == {"README.md", ".gitmodules"}
    assert not pwned.exists()
    check_reasons(held_back(settings, app_id, repository_id), ["ext", "etc", "option", "escape"])


def test_submodule_urls_follow_the_registered_url_policy(settings: Settings) -> None:
    parent = RemoteAccess("repo_x", "https://git.example.com/org/handbook", "", None)
    assert resolve_url(parent.url, "../style.git") == "https://git.example.com/org/style.git"
    assert resolve_url(parent.url, "./sub") == "https://git.example.com/org/handbook/sub"
    with pytest.raises(ValueError, match="climbs above"):
        resolve_url(parent.url, "../../../x")
    closed = settings.model_copy(update={"allow_file_urls": False, "allow_private_urls": False})
    for url, reason in {
        "file:///etc": "file:// git URLs read the worker's own disk",
        "http://10.0.0.1/x": "private or loopback",
        "ext::sh -c id": "names a git remote helper",
        "--upload-pack=touch /tmp/x": "starts with '-'",
        "ssh://-oProxyCommand=x/y": "starts with '-'",
    }.items():
        with pytest.raises(ValueError, match=reason):
            submodule_access(closed, parent, url)


def test_credentials_reach_only_the_parents_host(settings: Settings) -> None:
    from treecast.gitcache.command import Credentials

    parent = RemoteAccess("repo_x", "https://git.example.com/org/handbook", "", Credentials("t"))
    same = submodule_access(
        settings.model_copy(update={"allow_private_urls": True}), parent, "../style"
    )
    other = submodule_access(
        settings.model_copy(update={"allow_private_urls": True}),
        parent,
        "https://other.example.com/o/s",
    )
    assert same.credentials is parent.credentials
    assert other.credentials is None
    ssh_parent = RemoteAccess("repo_z", "ssh://git@git.example.com/org/handbook", "", None)
    ssh_parent = replace(ssh_parent, credentials=parent.credentials)
    scp = submodule_access(
        settings.model_copy(update={"allow_private_urls": True}),
        ssh_parent,
        "git@git.example.com:org/style",
    )
    assert scp.credentials is parent.credentials and scp.url.startswith("ssh://")
    # A cache reached with the parent's credentials is the parent's alone.
    assert (
        same.repository_id
        != submodule_access(
            settings.model_copy(update={"allow_private_urls": True}),
            RemoteAccess("repo_y", parent.url, "", None),
            "../style",
        ).repository_id
    )


def test_a_huge_pointer_is_held_back_without_a_request(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    repo = WorkRepo(tmp_path / "parent")
    repo.write(".gitattributes", "*.bin filter=lfs\n")
    repo.write("huge.bin", BIG.format("a" * 64))
    repo.write("small.txt", "kept\n")
    commit = repo.commit("pointers")
    app_id, repository_id = register(settings, receiver.url, [receiver_secret], repo.url)
    set_options(settings, app_id, repository_id, lfs=True)
    deliver(settings, app_id, repository_id, commit)
    assert set(receiver.files()) == {".gitattributes", "small.txt"}
    (line,) = held_back(settings, app_id, repository_id)
    assert "huge.bin" in line and "TREECAST_LFS_MAX_BYTES" in line


def test_an_lfsconfig_pointing_at_a_private_address_is_refused(
    strict: Settings, tmp_path: Path
) -> None:
    repo = WorkRepo(tmp_path / "parent")
    repo.write(".gitattributes", "*.bin filter=lfs\n")
    repo.write("small.bin", BIG.format("b" * 64).replace("10737418240", "5"))
    repo.write(".lfsconfig", "[lfs]\n\turl = http://169.254.169.254/lfs\n")
    commit = repo.commit("elsewhere")
    access = RemoteAccess("repo_lfsconfig", repo.url, "", None)
    cache = RepositoryCache(strict, access.repository_id)
    contents = contents_at(cache, access, commit, None, [], WatchOptions(lfs=True))
    assert "small.bin" not in contents.candidates.files
    reason = contents.candidates.held["small.bin"]
    assert ".lfsconfig is refused" in reason and "169.254.169.254" in reason


@needs_git_lfs
def test_an_object_that_does_not_match_its_pointer_is_never_delivered(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    with content_world(tmp_path / "world") as world:
        for stored in world.store.root.iterdir():
            world.store.serve[stored.name] = b"not what the pointer says"
        app_id, repository_id = register(
            settings, receiver.url, [receiver_secret], world.url("handbook")
        )
        set_options(settings, app_id, repository_id, lfs=True)
        commit = head(world)
        deliver(settings, app_id, repository_id, commit)
    assert "images/logo.png" not in receiver.files()
    assert receiver.files()["docs/index.md"] == b"# Handbook\n"
    (line,) = held_back(settings, app_id, repository_id)
    assert "images/logo.png" in line and "does not match its pointer" in line


def head(world: World) -> str:
    return world.git(world.root / "work" / "handbook", "rev-parse", "HEAD")


class _Loopback(httpcore.NetworkBackend):
    """Dials 127.0.0.1:`port` whatever address the guard vetted (nothing leaves the host)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dialled: list[str] = []
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.dialled.append(host)
        return self.inner.connect_tcp("127.0.0.1", self.port, *args, **kwargs)


@needs_git_lfs
def test_an_href_to_a_private_address_is_refused_before_connecting(
    strict: Settings, tmp_path: Path
) -> None:
    with content_world(tmp_path / "world") as world:
        world.store.href_for = lambda oid, href: "http://169.254.169.254/latest/meta-data"
        oid = next(world.store.root.iterdir()).name
        size = (world.store.root / oid).stat().st_size
        loopback = _Loopback(world.server.port)
        backend = GuardedBackend(
            allow_private=False,
            resolver=lambda host, port: ["192.0.0.9"],  # globally reachable (IANA)
            inner=loopback,
        )
        access = RemoteAccess("repo_x", "http://lfs.test/handbook.git", "", None)
        fetcher = LfsFetcher(strict, access, "http://lfs.test/handbook.git/info/lfs", backend)
        try:
            actions = fetcher.download_actions([Pointer(oid, size)])
            href, headers = actions[oid]
            with pytest.raises(LfsRefused, match=r"169\.254\.169\.254"):
                fetcher.fetch(Pointer(oid, size), href, headers)
        finally:
            fetcher.close()
    assert loopback.dialled == ["192.0.0.9"]  # the batch request only


@needs_git_lfs
def test_a_kept_object_is_delivered_only_when_the_repositorys_server_offers_it(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    with content_world(tmp_path / "world") as world:
        app_id, repository_id = register(
            settings, receiver.url, [receiver_secret], world.url("handbook")
        )
        set_options(settings, app_id, repository_id, lfs=True)
        deliver(settings, app_id, repository_id, head(world))  # the object is kept here now
        # Another repository names the same object; its server does not offer it.
        pointer = subprocess.run(
            ["git", "cat-file", "blob", "HEAD:images/logo.png"],
            cwd=world.root / "work" / "handbook",
            capture_output=True,
            check=True,
        ).stdout
        other = WorkRepo(world.root / "srv" / "borrower")
        other.write(".gitattributes", "*.png filter=lfs\n")
        other.write("logo.png", pointer)
        commit = other.commit("a borrowed pointer")
        app2, repo2 = register(
            settings, receiver.url, [receiver_secret], world.server.url("borrower/remote.git")
        )
        set_options(settings, app2, repo2, lfs=True)
        for stored in list(world.store.root.iterdir()):
            stored.rename(tmp_path / stored.name)  # gone from the server, kept by the worker
        deliver(settings, app2, repo2, commit)
    (line,) = held_back(settings, app2, repo2)
    assert "logo.png" in line and "no such object" in line
