"""Submodules and Git LFS delivered as a checkout shows them, against real parts: smart
HTTP on 127.0.0.1, submodules at relative URLs, git-lfs pushing to an LFS server, the
example receiver mirroring what it is sent."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from examples.receiver import Receiver
from models.delivery import AppDelivery, DeliverInput
from models.tables import Watch
from tests.support.contents_world import ICON, PNG, World, content_world, needs_git_lfs
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo
from tests.support.lfsserver import LfsStore
from tests.support.receiver_fixture import register, watch_row
from tests.support.registering import offline
from tests.support.sshserver import keygen, ssh_server
from treecast.config import Settings
from treecast.db import session_scope
from treecast.service.core import run as served
from treecast.service.credentials import CredentialSpec

pytestmark = needs_git_lfs


class Delivery:
    """One app watching the handbook with some options, delivered by the activity."""

    def __init__(self, settings: Settings, world: World, rcv: Receiver, secret: str) -> None:
        self.settings = settings
        self.receiver = rcv
        self.app_id, self.repository_id = register(
            settings, rcv.url, [secret], world.url("handbook")
        )

    def options(self, *, submodules: str | None = None, lfs: bool | None = None) -> None:
        with session_scope(self.settings.database_url) as session:
            watch = session.get(Watch, (self.app_id, self.repository_id))
            assert watch is not None
            watch.submodules, watch.lfs = submodules, lfs
            session.add(watch)

    def deliver(self, commit: str) -> AppDelivery:
        result = ActivityEnvironment().run(
            DeliveryActivities(self.settings).deliver_changes,
            DeliverInput(self.app_id, self.repository_id, commit),
        )
        assert isinstance(result, AppDelivery)
        return result

    def watch(self) -> Watch:
        return watch_row(self.settings, self.app_id, self.repository_id)

    def requests(self) -> list[tuple[str, str | None]]:
        return [(r.event, r.path) for r in self.receiver.file_requests() if not r.duplicate]


@pytest.fixture
def world(tmp_path: Path) -> Any:
    with content_world(tmp_path / "world") as made:
        yield made


@pytest.fixture
def run(settings: Settings, world: World, receiver: Receiver, receiver_secret: str) -> Delivery:
    return Delivery(settings, world, receiver, receiver_secret)


def head(world: World) -> str:
    return world.git(world.root / "work" / "handbook", "rev-parse", "HEAD")


def test_a_recursive_lfs_watch_mirrors_a_recursive_clone_with_lfs_pulled(
    run: Delivery, world: World
) -> None:
    rcv = run.receiver
    run.options(submodules="recursive", lfs=True)
    result = run.deliver(head(world))
    assert result.status == "synced", result
    expected = world.reference(world.root / "reference")
    assert run.watch().held_back is None
    assert rcv.files() == expected
    assert rcv.files()["images/logo.png"] == PNG
    assert rcv.files()["vendor/style/img/icon.png"] == ICON
    assert "vendor/style/deps/fonts/fonts.css" in rcv.files()
    assert run.watch().held_back is None


def test_a_watch_without_the_options_receives_what_it_did_before(
    run: Delivery, world: World
) -> None:
    rcv = run.receiver
    run.deliver(head(world))
    # What Treecast delivered before these options: the tree's regular files, pointers as
    # text (`git archive` without git-lfs's smudge filter), no submodule contents.
    handbook = world.root / "work" / "handbook"
    archive = world.root / "archive.tar"
    world.git(handbook, "-c", "filter.lfs.process=", "-c", "filter.lfs.smudge=",
              "-c", "filter.lfs.required=false", "archive",
              "--format=tar", "-o", str(archive), "HEAD")  # fmt: skip
    with tarfile.open(archive) as tar:
        expected = {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar
            if member.isfile()
        }
    assert rcv.files() == expected
    assert rcv.files()["images/logo.png"].startswith(b"version https://git-lfs")
    assert not any(path.startswith("vendor/") for path in rcv.files())


def test_a_submodule_bump_sends_exactly_the_changed_files(run: Delivery, world: World) -> None:
    rcv = run.receiver
    run.options(submodules="recursive", lfs=True)
    run.deliver(head(world))
    before = len(run.requests())
    style = world.root / "work" / "style"
    world.write(style, "style.css", "body { color: navy }\n")
    world.commit(style, "navy")
    handbook = world.root / "work" / "handbook"
    world.git(handbook, "submodule", "update", "-q", "--remote", "vendor/style")
    bumped = world.commit(handbook, "bump the style guide")
    result = run.deliver(bumped)
    assert result.status == "synced", result
    assert run.requests()[before:] == [("update", "vendor/style/style.css")]
    assert rcv.files()["vendor/style/style.css"] == b"body { color: navy }\n"


def test_shallow_expands_one_level(run: Delivery, world: World) -> None:
    rcv = run.receiver
    run.options(submodules="shallow")
    run.deliver(head(world))
    files = rcv.files()
    assert files["vendor/style/style.css"] == b"body { color: black }\n"
    assert files["vendor/style/img/icon.png"].startswith(b"version https://git-lfs")
    assert not any(path.startswith("vendor/style/deps/") for path in files)


def test_a_missing_lfs_object_is_held_back_and_the_rest_delivered(
    run: Delivery, world: World
) -> None:
    rcv = run.receiver
    logo = next(p for p in world.store.root.iterdir() if p.read_bytes() == PNG)
    moved = logo.with_name("moved")
    logo.rename(moved)
    run.options(lfs=True)
    result = run.deliver(head(world))
    assert result.status == "synced"
    assert "images/logo.png" not in rcv.files()
    assert rcv.files()["docs/index.md"] == b"# Handbook\n"
    held = json.loads(run.watch().held_back or "[]")
    assert held and "images/logo.png" in held[0] and "no such object" in held[0]
    assert run.watch().delivered_commit is None  # retried at the next sync
    moved.rename(logo)
    run.deliver(head(world))
    assert rcv.files()["images/logo.png"] == PNG
    assert run.watch().held_back is None


@pytest.mark.sshd
def test_lfs_over_ssh_asks_git_lfs_authenticate_with_the_deploy_key(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    store = LfsStore(tmp_path / "objects")
    store.root.mkdir()
    store.path(oid).write_bytes(data)
    repo = WorkRepo(tmp_path / "assets")
    repo.write(".gitattributes", "*.bin filter=lfs\n")
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n"
    repo.write("data.bin", pointer)
    commit = repo.commit("an LFS object")
    with ssh_server() as server, git_http_server(tmp_path / "none", None, lfs=store) as http:
        private, public = keygen(tmp_path / "deploy")
        # The forge's side: git-lfs-authenticate names its LFS server and a header.
        dispatch = tmp_path / "dispatch.sh"
        dispatch.write_text(
            "#!/bin/sh\n"
            'case "$SSH_ORIGINAL_COMMAND" in\n'
            '  "git-lfs-authenticate "*" download") printf \'{"href": '
            f'"{http.url("assets.git")}/info/lfs", "header": {{"Authorization": '
            '"RemoteAuth s3cr3t"}}\' ;;\n'
            '  *) eval "$SSH_ORIGINAL_COMMAND" ;;\n'
            "esac\n"
        )
        dispatch.chmod(0o755)
        with server.authorized_keys.open("a") as keys:
            keys.write(f'command="{dispatch}" {public.strip()}\n')
        service = offline(settings)
        app_id = served(service.apps.add("assets", receiver.url, receiver_secret)).app_id
        added = served(  # the deploy key is the app's own (its watch's)
            service.watches.watch(
                app_id,
                url=server.url(repo.remote),
                credentials=CredentialSpec(
                    ssh_private_key=private, known_hosts=server.known_hosts()
                ),
            )
        )
        with session_scope(settings.database_url) as session:
            watch = session.get(Watch, (app_id, added.repository_id))
            assert watch is not None
            watch.lfs = True
            session.add(watch)
        result = ActivityEnvironment().run(
            DeliveryActivities(settings).deliver_changes,
            DeliverInput(app_id, added.repository_id, commit),
        )
    assert result.status == "synced", result
    assert receiver.files()["data.bin"] == data
    assert "RemoteAuth s3cr3t" in store.authorizations


def test_depth_and_count_limits_hold_back_what_is_past_them(run: Delivery, world: World) -> None:
    run.settings = run.settings.model_copy(update={"submodule_max_depth": 1})
    run.options(submodules="recursive")
    run.deliver(head(world))
    files = run.receiver.files()
    assert "vendor/style/style.css" in files
    assert not any(path.startswith("vendor/style/deps/fonts/") for path in files)
    (line,) = json.loads(run.watch().held_back or "[]")
    assert "vendor/style/deps/fonts" in line and "deeper than 1 levels" in line

    run.settings = run.settings.model_copy(
        update={"submodule_max_depth": 5, "submodule_max_count": 1}
    )
    run.deliver(head(world))
    (line,) = json.loads(run.watch().held_back or "[]")
    assert "vendor/style/deps/fonts" in line and "more than 1 submodules" in line


def test_turning_lfs_on_sends_exactly_the_objects(run: Delivery, world: World) -> None:
    run.deliver(head(world))
    before = len(run.requests())
    with session_scope(run.settings.database_url) as session:
        watch = session.get(Watch, (run.app_id, run.repository_id))
        assert watch is not None
        watch.lfs, watch.delivered_commit = True, None  # as `watch --lfs` does
        session.add(watch)
    run.deliver(head(world))
    assert run.requests()[before:] == [("update", "images/logo.png")]
    assert run.receiver.files()["images/logo.png"] == PNG
