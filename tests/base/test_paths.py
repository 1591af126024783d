"""treecast.paths: the paths Treecast never delivers, after git's own verify_path rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzzing import bounded
from treecast.paths import HFS_IGNORABLE, is_safe_path, unsafe_path_reason

UNSAFE = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../b",
    "a/..",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\0b",
    ".git/config",
    ".git",
    "sub/.git/hooks/post-checkout",
    ".GIT/config",
    ".Git/config",
    # HFS+: ignorable code points inside .git
    ".g\u200cit/config",
    "\u200d.git/config",
    ".gi\u200ct/hooks/x",
    ".git\ufeff/config",
    ".G\u206fIT/config",
    # NTFS: 8.3 short name, trailing dots and spaces, alternate data streams
    "git~1/config",
    "GIT~1/config",
    ".git./config",
    ".git /config",
    ".git. . /config",
    ".git::$INDEX_ALLOCATION/config",
    ".git:stream",
    "git~1:x/y",
    # Windows separators and drives
    "..\\escape",
    "a\\..\\..\\b",
    "a\\.git\\config",
    "a\\git~1\\config",
    "\\server\\share",
    "C:\\Windows\\x",
    "c:x",
    "a:b",
    ".. /x",
    ".../x",
    "a/. /b",
]

SAFE = [
    "a",
    "a b.txt",
    "with\nnewline",
    'quote\'s "double".md',
    "unicodé/名前/файл",
    "#hash",
    "-rf",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    ".github/workflows/ci.yml",
    "git",
    ".gitx/config",
    "x.git/config",
    "a.git",
    "git~2/config",
    "git~1x/config",
    "..a/b",
    "a../b",
    "...a",
    "back\\slash",
    "ab:c",
    ".g\u200bit/config",  # ZERO WIDTH SPACE is not one HFS+ ignores
    " ",
    "a/b/c/d.txt",
]


@pytest.mark.parametrize("path", UNSAFE)
def test_unsafe_paths_have_a_one_line_reason(path: str) -> None:
    reason = unsafe_path_reason(path)
    assert reason is not None, path
    assert "\n" not in reason and reason.startswith("the path ")
    assert not is_safe_path(path)


@pytest.mark.parametrize("path", SAFE)
def test_ordinary_names_stay_deliverable(path: str) -> None:
    assert unsafe_path_reason(path) is None
    assert is_safe_path(path)


def _dotgit_spellings() -> st.SearchStrategy[str]:
    """`.git` in any case, with HFS-ignorable code points anywhere in it."""
    ignorable = st.lists(st.sampled_from(sorted(HFS_IGNORABLE)), max_size=2).map("".join)
    letters = st.tuples(*(st.sampled_from([c, c.upper()]) for c in ".git"))
    return st.tuples(letters, st.lists(ignorable, min_size=5, max_size=5)).map(
        lambda t: "".join(i + c for c, i in zip(t[0], t[1][:4], strict=True)) + t[1][4]
    )


def _ntfs_spellings() -> st.SearchStrategy[str]:
    base = st.sampled_from([".git", ".GIT", "git~1", "Git~1"])
    tail = st.lists(st.sampled_from([".", " "]), max_size=4).map("".join)
    stream = st.sampled_from(["", ":", "::$INDEX_ALLOCATION", ":x:$DATA"])
    return st.tuples(base, tail, stream).map("".join)


NAME = st.text(
    alphabet=st.characters(exclude_characters="/\\\0:", exclude_categories=["Cs"]),
    min_size=1,
    max_size=12,
).filter(lambda name: "." not in name or name.strip(". ") != "")


@bounded
@given(st.lists(NAME, min_size=1, max_size=5), st.data())
def test_a_dotgit_component_anywhere_is_refused(names: list[str], data: st.DataObject) -> None:
    bad = data.draw(st.one_of(_dotgit_spellings(), _ntfs_spellings(), st.just("..")))
    where = data.draw(st.integers(min_value=0, max_value=len(names)))
    path = "/".join([*names[:where], bad, *names[where:]])
    assert unsafe_path_reason(path) is not None, path


@bounded
@given(st.lists(NAME, min_size=1, max_size=5))
def test_names_git_would_check_out_are_deliverable(names: list[str]) -> None:
    def dotgit_like(name: str) -> bool:
        stripped = "".join(c for c in name if c not in HFS_IGNORABLE).lower()
        return stripped == ".git" or stripped.rstrip(". ").lower() in (".git", "git~1")

    path = "/".join(names)
    expected_safe = not any(dotgit_like(n) or n in (".", "..") for n in names)
    expected_safe = expected_safe and not (len(names[0]) >= 2 and names[0][1] == ":")
    assert (unsafe_path_reason(path) is None) == expected_safe, path
