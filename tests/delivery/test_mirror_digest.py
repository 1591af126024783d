"""The tree digest of docs/webhooks.md, implemented twice: by Treecast (over git's own
listing of a commit, as a manifest and `sync_completed` carry it) and by a receiver written
from the spec alone (tests/support/spec_digest.py, which imports nothing of Treecast). They must
agree on random trees."""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import spec_digest
from tests.support.fuzzing import examples
from tests.support.gitrepos import WorkRepo
from treecast.config import load_settings
from treecast.crypto import generate_key
from treecast.delivery.digest import (
    EMPTY_DIGEST,
    SHA256,
    TreeDigest,
    git_blob_id,
    tree_digest,
)
from treecast.delivery.manifest import commit_digest, manifest_files
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.paths import unsafe_path_reason

SPEC = Path(spec_digest.__file__)

# Names a repository may hold: ASCII, spaces, dots, punctuation, accents, other scripts
# and characters above the BMP (whose UTF-8 order is their code point order).
NAME = st.text(
    alphabet=st.sampled_from([*"abcAB-_. ~#'09", "é", "ß", "日", "\u00a0", "😀", "Z"]),
    min_size=1,
    max_size=6,
)
PATH = st.lists(NAME, min_size=1, max_size=3).map("/".join)
CONTENT = st.binary(max_size=64)


def tree_of(raw: dict[str, bytes]) -> dict[str, bytes]:
    """The files a repository can hold and Treecast delivers: safe paths, and no file
    where another needs a folder."""
    safe = {p: c for p, c in raw.items() if unsafe_path_reason(p) is None}
    return {p: c for p, c in safe.items() if not any(q.startswith(p + "/") for q in safe)}


def test_the_spec_receiver_imports_nothing_of_treecast() -> None:
    tree = ast.parse(SPEC.read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


@given(st.dictionaries(PATH, CONTENT, max_size=30), st.sampled_from(["sha1", SHA256]))
@settings(max_examples=examples(300), deadline=None, database=None)
def test_the_definitions_agree_on_random_files(raw: dict[str, bytes], object_format: str) -> None:
    files = tree_of(raw)
    ours = tree_digest((p, git_blob_id(c, object_format)) for p, c in files.items())
    assert ours == spec_digest.digest_of_files(files, object_format)


def test_known_values() -> None:
    assert tree_digest([]) == EMPTY_DIGEST == spec_digest.digest_of_files({})
    # `git hash-object` of "hello\n", and the digest of that one file written out by hand.
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    line = b"a.txt\x00ce013625030ba8dba906f756967f9e9ca394464a\n"
    assert tree_digest([("a.txt", git_blob_id(b"hello\n"))]) == hashlib.sha256(line).hexdigest()


def test_a_digest_fed_out_of_order_is_refused() -> None:
    digest = TreeDigest()
    digest.add("b", "0" * 40)
    with pytest.raises(ValueError, match="does not come after"):
        digest.add("a", "0" * 40)
    with pytest.raises(ValueError):
        digest.add("b", "0" * 40)  # the same path twice


def _digest_of_commit(root: Path, files: dict[str, bytes]) -> tuple[str, str, list[str]]:
    """(Treecast's digest of the commit, the spec receiver's of a checkout, git's order)."""
    repo = WorkRepo(root / "repo")
    for path, content in files.items():
        repo.write(path, content)
    commit = repo.commit("random tree", push=False)  # Treecast fetches from the work tree
    treecast = load_settings(
        {
            "TREECAST_DATA_DIR": str(root / "data"),
            "TREECAST_SECRET_KEY": generate_key(),
            "TREECAST_ALLOW_FILE_URLS": "1",
            "TREECAST_ALLOW_PRIVATE_URLS": "1",
        }
    )
    cache = RepositoryCache(treecast, "repo_digest")
    access = RemoteAccess("repo_digest", f"file://{repo.work}", "", None)
    with cache.reading():
        ours, count = commit_digest(cache, access, commit, [])
        order = [entry.path for entry in manifest_files(cache, access, commit, [])]
    assert count == len(files)
    checkout = root / "checkout"
    subprocess.run(
        ["git", "clone", "-q", str(repo.work), str(checkout)], check=True, capture_output=True
    )
    shutil.rmtree(checkout / ".git")
    return ours, spec_digest.digest_of_folder(str(checkout)), order


@given(st.dictionaries(PATH, CONTENT, min_size=1, max_size=25))
@settings(
    max_examples=examples(25),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_treecast_and_the_spec_receiver_agree_on_random_repositories(
    raw: dict[str, bytes],
) -> None:
    files = tree_of(raw)
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="treecast-digest-") as root:
        ours, theirs, order = _digest_of_commit(Path(root), files)
    assert ours == theirs
    # git lists a tree in the digest's order: the manifest streams without sorting.
    assert order == sorted(files, key=lambda p: p.encode())
