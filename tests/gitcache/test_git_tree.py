"""Listing trees with git: file kinds, odd paths, `.treecastignore`, path globs, diffs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.tables import parse_globs
from tests.support.gitrepos import WorkRepo, git
from treecast.config import Settings
from treecast.gitcache.cache import cache_lock
from treecast.gitcache.objects import blob_sizes
from treecast.gitcache.remote import sync_ref
from treecast.gitcache.tree import (
    FileFilter,
    diff_stats,
    diff_trees,
    file_blobs,
    ignore_filter,
    list_tree,
    touches_ignore_file,
)

BAD_NAME = os.fsdecode(b"bad-\xff-name.txt")


def synced(settings: Settings, repo: WorkRepo) -> tuple[Path, str]:
    with cache_lock(settings, "repo_t") as path:
        out = sync_ref(settings, path, repo.url, "")
    assert out.commit is not None
    return path, out.commit


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "origin")
    work.write("README.md", "# readme\n")
    work.write("docs/guide.md", "guide\n")
    work.write("docs/img/logo.png", b"\x89PNG\r\n\x1a\n\0\0")
    work.write("src/app.py", "print('hi')\n")
    work.write("run.sh", "#!/bin/sh\n")
    os.chmod(work.work / "run.sh", 0o755)
    work.write("spaces and\ttab\nnewline.txt", "odd but valid\n")
    work.write(BAD_NAME, "not utf-8\n")
    os.symlink("README.md", work.work / "link.md")
    # A submodule entry (gitlink) whose directory stays empty, as in a fresh clone.
    (work.work / "vendor" / "lib").mkdir(parents=True)
    git(work.work, "update-index", "--add", "--cacheinfo", f"160000,{'a' * 40},vendor/lib")
    work.commit("everything")
    return work


def test_listing_keeps_files_and_counts_the_rest(settings: Settings, repo: WorkRepo) -> None:
    path, commit = synced(settings, repo)
    listing = list_tree(settings, path, commit)
    assert sorted(listing.files) == [
        "README.md",
        "docs/guide.md",
        "docs/img/logo.png",
        "run.sh",
        "spaces and\ttab\nnewline.txt",
        "src/app.py",
    ]
    assert listing.files["run.sh"].mode == "100755"
    assert listing.files["README.md"].size == len("# readme\n")
    stats = listing.stats
    assert (stats.skipped_symlinks, stats.skipped_submodules, stats.skipped_invalid_paths) == (
        1,
        1,
        1,
    )
    assert stats.invalid_paths == ["bad-\\xff-name.txt"]
    assert stats.file_count == 6
    assert stats.total_bytes == sum(f.size for f in listing.files.values())
    for name, entry in listing.files.items():
        data = (repo.work / name).read_bytes()
        assert entry.size == len(data)
        assert entry.blob_id == git(repo.work, "hash-object", "--", name)


def test_treecastignore_and_globs(settings: Settings, repo: WorkRepo) -> None:
    repo.write(".treecastignore", "# comment\n*.png\nsrc/\n!src/keep.py\n")
    repo.write("src/keep.py", "kept?\n")
    repo.commit()
    path, commit = synced(settings, repo)
    listing = list_tree(settings, path, commit)
    assert "docs/img/logo.png" not in listing.files
    assert "src/app.py" not in listing.files
    assert ".treecastignore" in listing.files  # the rules file itself is a repository file
    # pathspec lets a negation re-include a file under an excluded folder (git would not).
    assert "src/keep.py" in listing.files
    assert listing.stats.ignored == 2
    assert listing.stats.file_count == len(listing.files)

    docs = list_tree(settings, path, commit, ignore_filter(settings, path, commit, ["docs/**"]))
    assert sorted(docs.files) == ["docs/guide.md"]
    markdown = list_tree(settings, path, commit, ignore_filter(settings, path, commit, ["*.md"]))
    assert sorted(markdown.files) == ["README.md", "docs/guide.md"]
    # Globs narrow per app; the repository's counts stay those of the ignore file alone.
    assert docs.stats.file_count == listing.stats.file_count


def test_a_small_listing_is_read_from_git_once_a_worker(
    settings: Settings, repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot and each app's first delivery list the same commit: git lists it once,
    the memo gives the same listing (filtered and counted afresh); a big one is not kept."""
    import treecast.gitcache.tree as tree_module
    from treecast.gitcache.command import stream_records as real

    listings: list[str] = []

    def recorded(args: list[str], **kwargs: object) -> object:
        listings.append(args[-1])
        return real(args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tree_module, "stream_records", recorded)
    path, commit = synced(settings, repo)
    counted = list_tree(settings, path, commit, keep_files=False)
    docs = list_tree(settings, path, commit, ignore_filter(settings, path, commit, ["docs/**"]))
    assert listings == [commit]
    assert sorted(docs.files) == ["docs/guide.md", "docs/img/logo.png"]
    assert docs.stats == counted.stats == list_tree(settings, path, commit).stats

    monkeypatch.setattr(tree_module, "MEMO_MAX_LISTING_RECORDS", 3)
    repo.write("more.md", "more\n")
    newer = repo.commit()
    path, _ = synced(settings, repo)
    list_tree(settings, path, newer)
    list_tree(settings, path, newer)
    assert listings == [commit, newer, newer]


def test_filter_rules() -> None:
    plain = FileFilter()
    assert plain.wanted("anything/at/all")
    f = FileFilter(["build/", "*.log"], ["docs/**", "*.md", "!docs/private/**"])
    assert f.wanted("docs/a/b.txt")
    assert f.wanted("notes.md") and f.wanted("deep/dir/notes.md")
    assert not f.wanted("src/main.py")
    assert not f.wanted("docs/private/secret.txt")
    assert not f.wanted("docs/build/out.md")  # ignored for every app, globs cannot bring it back
    assert not f.wanted("docs/x.log")
    assert parse_globs('["docs/**", "", 3]') == ["docs/**"]
    assert parse_globs("not json") == [] and parse_globs(None) == []


def test_diff_counts_match_a_full_listing(settings: Settings, repo: WorkRepo) -> None:
    path, before = synced(settings, repo)
    repo.write("docs/guide.md", "guide, longer now\n")
    repo.remove("README.md")
    repo.write("new/file.txt", "new\n")
    repo.remove("link.md")
    os.symlink("docs/guide.md", repo.work / "README.md")  # file became a symlink
    repo.write(os.fsdecode(b"another-\xfe.txt"), "x")
    repo.commit()
    path, after = synced(settings, repo)
    entries = diff_trees(settings, path, before, after)
    assert not touches_ignore_file(entries)
    full_before = list_tree(settings, path, before).stats
    full_after = list_tree(settings, path, after).stats
    delta = diff_stats(entries, blob_sizes(path, file_blobs(entries)), FileFilter())
    full_before.add(delta)
    assert (
        full_before.file_count,
        full_before.total_bytes,
        full_before.skipped_symlinks,
        full_before.skipped_submodules,
        full_before.skipped_invalid_paths,
    ) == (
        full_after.file_count,
        full_after.total_bytes,
        full_after.skipped_symlinks,
        full_after.skipped_submodules,
        full_after.skipped_invalid_paths,
    )
    repo.write(".treecastignore", "docs/\n")
    repo.commit()
    path, last = synced(settings, repo)
    assert touches_ignore_file(diff_trees(settings, path, after, last))


def test_large_tree_lists_quickly(settings: Settings, tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "big")
    stream = []
    count = 5000
    for i in range(count):
        data = f"file {i}\n".encode()
        stream.append(b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data))
    stream.append(b"commit refs/heads/main\ncommitter T <t@e> 0 +0000\ndata 2\nc\n")
    for i in range(count):
        stream.append(b"M 100644 :%d dir%d/f%d.txt\n" % (i + 1, i % 50, i))
    import subprocess

    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=repo.remote, input=b"".join(stream), check=True
    )
    path, commit = synced(settings, repo)
    listing = list_tree(settings, path, commit)
    assert listing.stats.file_count == count
