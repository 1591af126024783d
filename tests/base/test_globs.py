"""treecast.globs: pathspec's GitIgnoreSpec semantics without its catastrophic backtracking.

The reference is `pathspec.GitIgnoreSpec` with its pure-Python backend (what
Treecast used). Longer fuzzing: HYPOTHESIS_PROFILE=fuzz pytest tests/base/test_globs.py
"""

from __future__ import annotations

import logging
import time

import pathspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzzing import bounded
from treecast import globs
from treecast.globs import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    MAX_REGEX_CHARS,
    GlobSpec,
    skip_with_warning,
)


def reference(lines: list[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")


def same(lines: list[str], paths: list[str]) -> None:
    ours = GlobSpec.from_lines(lines)
    ref = reference(lines)
    for path in paths:
        assert ours.match_file(path) == ref.match_file(path), (lines, path)


def same_or_refused(lines: list[str], paths: list[str]) -> None:
    """`same`, or a ValueError for lines GlobSpec must refuse."""
    if not _valid(lines):
        with pytest.raises(ValueError):
            GlobSpec.from_lines(lines)
        return
    same(lines, paths)


CASES = [
    (["*.log"], ["a.log", "x/a.log", "a.log/b", "alog", "a.log.txt"]),
    (["build/"], ["build", "build/x", "a/build/x", "a/build"]),
    (["/build"], ["build", "build/x", "a/build", "a/build/x"]),
    (["a/b"], ["a/b", "x/a/b", "a/b/c", "a/bc"]),
    (["a/**/b"], ["a/b", "a/x/b", "a/x/y/b", "a/x/b/c", "b"]),
    (["**/x"], ["x", "a/x", "a/b/x/c"]),
    (["x/**"], ["x", "x/a", "x/a/b"]),
    (["*", "!*.py"], ["a.py", "a.txt", "d/a.py", "d/a.txt"]),
    (["d/", "!d/keep.txt"], ["d/keep.txt", "d/other", "d/sub/keep.txt"]),
    (["[a-c]x", "[!a]y"], ["ax", "dx", "ay", "by"]),
    (["[[:alpha:]]"], ["a", "[", ":", "]", "[]", "a]"]),
    (["\\!z", "\\#c", "a\\ ", "b  "], ["!z", "#c", "a ", "a", "b", "b  "]),
    (["#comment", "", "  "], ["#comment", "  "]),
    (["foo"], ["foo\n", "x/foo\n", "foo\n/x", "a\n/foo"]),
    (["/a/b/", "c/d/"], ["a/b/c", "a/b", "x/c/d/e", "c/d/e"]),
    (["node_modules", "!node_modules/keep"], ["node_modules/keep", "x/node_modules/y"]),
    (["*", "!/a", "/a/b"], ["a", "a/b", "a/c", "b/a"]),
    (["a", "!a/"], ["a", "a/b"]),
    (["dir/sub", "!dir/"], ["dir/sub", "dir/sub/x"]),
    # pathspec searches unanchored regexes anywhere (`**` is `.`): found by hypothesis
    (["**"], ["\na", "a", "\n"]),
    (["**/"], ["a/b", "a", "\n/a"]),
    (["*.py", "!*.py/", "*.d/"], ["a.py", "a.py/b", "x/.py", "b.d/c", "b.d", "/x.py"]),
    (["*.py"] * 3 + ["!a.py"] + ["*.py"] * 2, ["a.py", "b/a.py"]),
    # one regex, two kinds: a file match for `x*/**`, a folder match for `/x*`
    (["x*/**", "!/x*"], ["xa/b", "x/y", "xa"]),
    (["x/**", "!x"], ["x/y", "xa/b"]),
    (["!*/*/**", "*/*"], ["a/a/a"]),  # found by the structured fuzz on the bug above
]


@pytest.mark.parametrize(("lines", "paths"), CASES)
def test_examples_match_pathspec(lines: list[str], paths: list[str]) -> None:
    same(lines, paths)


def test_catastrophic_pattern_answers_in_under_10_ms() -> None:
    # pathspec/re needs ~150 s for this (10 stars and 36 characters: 5.7 s).
    spec = GlobSpec.from_lines(["*a*a*a*a*a*a*a*a*a*a*a*ab"])
    start = time.perf_counter()
    assert spec.match_file("a" * 41) is False
    assert spec.match_file("a" * 36) is False
    elapsed = time.perf_counter() - start
    assert elapsed < 0.010, f"{elapsed * 1000:.1f} ms"
    assert spec.match_file("a" * 40 + "b")


def test_many_wildcards_and_a_long_path_stay_linear() -> None:
    spec = GlobSpec.from_lines(["*a" * 500 + "b", "**/" * 300 + "x", "a/**/" * 100 + "c"])
    path = "/".join(["a" * 30] * 100)
    start = time.perf_counter()
    assert not spec.match_file(path)
    assert time.perf_counter() - start < 0.05


def test_a_big_ignore_file_of_names_costs_little_per_path() -> None:
    lines = [f"f{i:05d}" for i in range(MAX_PATTERNS - 200)] + [f"*.x{i}" for i in range(200)]
    spec = GlobSpec.from_lines(lines)
    paths = [f"src/some/dir/file{i}.py" for i in range(200)]
    start = time.perf_counter()
    for path in paths:
        assert not spec.match_file(path)
    per_path = (time.perf_counter() - start) / len(paths)
    assert per_path < 0.002, f"{per_path * 1e6:.0f} µs per path"
    assert spec.match_file("a/f00017") and spec.match_file("f00017/b") and spec.match_file("q.x7")


def test_too_many_patterns_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=f"more than {MAX_PATTERNS} patterns") as info:
        GlobSpec.from_lines([f"p{i}" for i in range(MAX_PATTERNS + 1)])
    assert "\n" not in str(info.value)
    assert len(GlobSpec.from_lines(["a", "b"], max_patterns=2)) == 2
    # comments and blank lines do not count
    assert len(GlobSpec.from_lines(["#x"] * 5 + ["", "a"], max_patterns=1)) == 1


def test_too_many_wildcard_characters_is_one_clear_error() -> None:
    lines = ["*a?b" * 100] * 40  # 16,000 characters
    assert len(GlobSpec.from_lines(lines)) == 40
    with pytest.raises(ValueError, match=f"more than {MAX_REGEX_CHARS} characters"):
        GlobSpec.from_lines([*lines, "*c?d" * 100])
    # plain names, /paths and *.ext lines cost nothing per pattern and do not count
    assert len(GlobSpec.from_lines([*lines, "x" * 1000, "/y" * 500, "*." + "z" * 1000])) == 43


def test_the_worst_pattern_allowed_is_bounded_on_the_longest_path() -> None:
    # A DFA-hostile pattern of the maximum length on a 4 KiB path: RE2 falls back to
    # its NFA, linear in both; measured ~30 ms (pathspec: exponential).
    spec = GlobSpec.from_lines(["*a" + "?" * (MAX_PATTERN_LENGTH - 3) + "b"])
    start = time.perf_counter()
    assert not spec.match_file("/".join(["a" * 255] * 16))
    assert time.perf_counter() - start < 1.0


def test_a_too_long_line_is_refused_or_skipped(caplog: pytest.LogCaptureFixture) -> None:
    long = "a" * (MAX_PATTERN_LENGTH + 1)
    with pytest.raises(ValueError, match=f"longer than {MAX_PATTERN_LENGTH} characters"):
        GlobSpec.from_lines(["ok", long])
    with caplog.at_level(logging.WARNING):
        spec = GlobSpec.from_lines(["ok", long], on_invalid=skip_with_warning("path glob"))
    assert spec.match_file("ok") and not spec.match_file(long)
    assert "ignoring the invalid path glob pattern" in caplog.text


@pytest.mark.parametrize("bad", ["\\", "!", "a\\", "[z-a]", "x[b-a]y"])
def test_invalid_lines_raise_value_error_or_are_skipped(bad: str) -> None:
    # pathspec lets re.error (not a ValueError) out for `[z-a]`: Treecast's `_spec`,
    # which catches ValueError, then fails every sync of that repository.
    with pytest.raises(ValueError, match="pattern line 2"):
        GlobSpec.from_lines(["keep", bad])
    skipped: list[str] = []
    spec = GlobSpec.from_lines(["keep", bad], on_invalid=lambda line, _reason: skipped.append(line))
    assert skipped == [bad] and spec.match_file("keep")


def test_reversed_range_fails_pathspec_with_a_non_value_error() -> None:
    """The defect above, shown on the reference itself."""
    with pytest.raises(Exception) as info:
        pathspec.GitIgnoreSpec.from_lines(["[z-a]"], backend="simple")
    assert not isinstance(info.value, ValueError)


def test_a_set_too_big_for_re2_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(globs, "RE2_MAX_MEM", 1 << 10)  # too small to compile the set
    lines = [f"*{i}*a*b*c" for i in range(60)]
    spec = GlobSpec.from_lines(lines)
    ref = reference(lines)
    for path in ["x/17zzabc", "1abc", "a/b/c", "59-a-b-c/d"]:
        assert spec.match_file(path) == ref.match_file(path)


def test_a_set_whose_dfa_runs_out_of_memory_is_not_read_as_no_match() -> None:
    class OutOfMemory:
        def Match(self, text: bytes) -> None:  # what RE2::Set answers when its DFA fails
            return None

    spec = GlobSpec.from_lines(["*.log", "!keep*.log"])
    for regex_set in spec._sets:
        regex_set._set = OutOfMemory()
    assert spec.match_file("a/b.log") and not spec.match_file("keep1.log")


# -- property-based: random small patterns and paths against the reference -------------

PATTERN_CHARS = st.sampled_from([*"ab/*?[]!\\ #-^.", "é", "**", "[!", "[a-b]", "\\*"])
PATH_CHARS = st.sampled_from([*"ab/. *[\\!#", "é", "\n", "ab", "/a/"])


@st.composite
def lines_strategy(draw: st.DrawFn) -> list[str]:
    count = draw(st.integers(min_value=1, max_value=4))
    return ["".join(draw(st.lists(PATTERN_CHARS, max_size=7))) for _ in range(count)]


paths_strategy = st.lists(
    st.lists(PATH_CHARS, min_size=1, max_size=8).map("".join), min_size=1, max_size=6
)


def _valid(lines: list[str]) -> bool:
    try:
        reference(lines)
    except Exception:
        return False
    return True


@bounded
@given(lines_strategy(), paths_strategy)
def test_agrees_with_pathspec_on_random_patterns(lines: list[str], paths: list[str]) -> None:
    same_or_refused(lines, paths)


@bounded
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "ab", "é", "\\ ", "."]), min_size=1, max_size=3)
        .map("".join)
        .flatmap(
            lambda name: st.sampled_from(
                [
                    *(name, f"/{name}", f"{name}/", f"!{name}", f"a/{name}", f"/{name}/"),
                    *(f"!/{name}", f"*{name}", f"*{name}/", f"!*{name}", f"/*{name}"),
                ]
            )
        ),
        min_size=1,
        max_size=6,
    ),
    paths_strategy,
)
def test_literal_fast_path_agrees_with_pathspec(lines: list[str], paths: list[str]) -> None:
    same(lines, paths)


SEGMENT = st.sampled_from(["a", "b", "*", "a*", "*a", "**", "[ab]", "?", "a?b", "\\*"])


@st.composite
def structured_line(draw: st.DrawFn) -> str:
    """A gitignore line built from path segments: `!`, a leading `/`, `**`, a trailing `/`."""
    segments = draw(st.lists(SEGMENT, min_size=1, max_size=4))
    return (
        draw(st.sampled_from(["", "!"]))
        + draw(st.sampled_from(["", "/"]))
        + "/".join(segments)
        + draw(st.sampled_from(["", "/", "/**"]))
    )


structured_paths = st.lists(
    st.lists(st.sampled_from(["a", "b", "ab", "ba", "aab", "*", "x"]), min_size=1, max_size=5).map(
        "/".join
    ),
    min_size=1,
    max_size=6,
)


@bounded
@given(st.lists(structured_line(), min_size=1, max_size=5), structured_paths)
def test_structured_patterns_agree_with_pathspec(lines: list[str], paths: list[str]) -> None:
    same_or_refused(lines, paths)
