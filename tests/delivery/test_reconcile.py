"""Reconcile's pure core and the ledger it rewrites: the merge of what the app holds with
its ledger, and that the ordinary change computation then yields exactly the difference."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import select

from models.changes import ChangeKind
from models.tables import DeliveredFile, Watch, WatchStatus
from tests.support.fuzzing import examples
from tests.support.receiver_fixture import register
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.changes import Candidates, compute_changes
from treecast.delivery.digest import git_blob_id
from treecast.delivery.reconcile import Drift, HeldFile, HeldLimits, compare, parse_held
from treecast.store.ledger import load_ledger
from treecast.store.mirrors import LedgerFix, sorted_ledger, take_apps_word

BLOB = st.sampled_from(["a" * 40, "b" * 40, "c" * 40])
FILES = st.dictionaries(st.text("xyzé/-", min_size=1, max_size=4), BLOB, max_size=12)


def ordered(files: dict[str, str]) -> list[tuple[str, str]]:
    return sorted(files.items(), key=lambda item: item[0].encode())


@given(FILES, FILES)
@settings(max_examples=examples(300), deadline=None, database=None)
def test_the_merge_finds_what_sets_find(held: dict[str, str], recorded: dict[str, str]) -> None:
    found = compare((HeldFile(p, b) for p, b in ordered(held)), ordered(recorded), keep=True)
    assert found.counts[Drift.MISSING] == len(recorded.keys() - held.keys())
    assert found.counts[Drift.EXTRA] == len(held.keys() - recorded.keys())
    changed = {p for p in held.keys() & recorded.keys() if held[p] != recorded[p]}
    assert found.counts[Drift.CHANGED] == len(changed)
    assert (found.held, found.recorded) == (len(held), len(recorded))
    assert [d.path for d in found.differences] == sorted(
        (recorded.keys() ^ held.keys()) | changed, key=str.encode
    )


def test_lines_may_be_a_manifest_sent_back() -> None:
    limits = HeldLimits(max_files=10, max_path_bytes=4096)
    lines = [
        b'{"manifest": 1, "commit": "' + b"0" * 40 + b'"}\r\n',
        b"\n",
        b'{"path": "a", "blob_id": "' + b"1" * 40 + b'", "size": 3, "mode": "100755"}\n',
        json.dumps({"path": "é", "blob_id": "2" * 40, "sha256": "f" * 64}).encode(),
    ]
    assert list(parse_held(lines, limits)) == [
        HeldFile("a", "1" * 40),
        HeldFile("é", "2" * 40, "f" * 64),
    ]


def test_sha256_repositories_take_64_digit_blob_ids() -> None:
    limits = HeldLimits(max_files=10, max_path_bytes=4096, object_format="sha256")
    ok = json.dumps({"path": "a", "blob_id": "1" * 64}).encode()
    assert [h.blob_id for h in parse_held([ok], limits)] == ["1" * 64]


def test_the_ledger_is_read_in_the_digests_order(any_db_settings: Settings) -> None:
    """PostgreSQL sorts text by its locale unless told to compare bytes: the ledger must
    come in the order of the UTF-8 bytes, as the digest and the merge need."""
    settings = any_db_settings
    paths = ["B.txt", "a.txt", "a-b/x", "a/b", "a0", "é.txt", "e.txt", "Z", "日本", "😀", "ß"]
    if settings.database_url.startswith("postgresql"):
        # The tests' server is initialised in the C locale: give the column a real one.
        with session_scope(settings.database_url) as session:
            session.execute(
                text(
                    'ALTER TABLE delivered_files ALTER COLUMN path TYPE varchar(4096) COLLATE "und-x-icu"'
                )
            )
    app_id, repository_id = register(settings, "http://127.0.0.1:9", ["whsec_x"], "file:///r")
    with session_scope(settings.database_url) as session:
        for path in paths:
            session.add(
                DeliveredFile(
                    app_id=app_id, repository_id=repository_id, path=path, blob_id="a" * 40,
                    sha256="",
                )
            )  # fmt: skip
    with session_scope(settings.database_url) as session:
        read = [path for path, _ in sorted_ledger(session, app_id, repository_id)]
    assert read == sorted(paths, key=str.encode)


def test_taking_the_apps_word_makes_the_next_delivery_send_exactly_the_difference(
    any_db_settings: Settings,
) -> None:
    """The issue's design: the ledger says what the app holds, the watch has no delivered
    commit; the ordinary full comparison then yields the difference and nothing else."""
    settings = any_db_settings
    tree = {f"f{n:03d}.txt": git_blob_id(f"{n}\n".encode()) for n in range(50)}
    app_id, repository_id = register(settings, "http://127.0.0.1:9", ["whsec_x"], "file:///r")
    with session_scope(settings.database_url) as session:
        for path, blob in tree.items():
            session.add(
                DeliveredFile(
                    app_id=app_id, repository_id=repository_id, path=path, blob_id=blob,
                    sha256="s",
                )
            )  # fmt: skip
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        watch.delivered_commit, watch.status = "c" * 40, WatchStatus.SYNCED
        generation = watch.ledger_generation
    held = dict(tree)
    for gone in ("f001.txt", "f002.txt", "f003.txt"):
        del held[gone]
    held["f010.txt"] = held["f011.txt"] = git_blob_id(b"corrupt")
    held["zz-extra.txt"] = git_blob_id(b"mine")
    with session_scope(settings.database_url) as session:
        found = compare(
            (HeldFile(p, b) for p, b in ordered(held)),
            sorted_ledger(session, app_id, repository_id),
            keep=True,
        )
        fixes = [
            LedgerFix(d.path, None if d.held is None else d.held.blob_id) for d in found.differences
        ]
        take_apps_word(session, app_id, repository_id, fixes)
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        assert watch.delivered_commit is None and watch.ledger_generation != generation
        ledger = load_ledger(session, app_id, repository_id)
        rows = session.exec(select(DeliveredFile.path, DeliveredFile.sha256)).all()
    assert {p: e.blob_id for p, e in ledger.items()} == held
    assert dict(rows)["f000.txt"] == "s"  # untouched rows keep what they knew
    changes = compute_changes(Candidates({p: (b, 1) for p, b in tree.items()}, True), ledger)
    assert [(c.kind, c.path) for c in changes.changes] == [
        (ChangeKind.DELETE, "zz-extra.txt"),
        (ChangeKind.CREATE, "f001.txt"),
        (ChangeKind.CREATE, "f002.txt"),
        (ChangeKind.CREATE, "f003.txt"),
        (ChangeKind.UPDATE, "f010.txt"),
        (ChangeKind.UPDATE, "f011.txt"),
    ]
