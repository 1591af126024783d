"""Worst cases of gitignore matching: treecast.globs (RE2) against pathspec (Python's re).

Run: `python -m bench.globs` (about three minutes) or `--quick` (one).

pathspec runs in a subprocess with a timeout, so its catastrophic cases end the
script too: a case past the timeout prints as "> N s".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

from treecast.globs import MAX_PATTERN_LENGTH, MAX_PATTERNS, MAX_REGEX_CHARS, GlobSpec

CATASTROPHIC = "*a*a*a*a*a*a*a*a*a*a*a*ab"  # stars(12): ~150 s on a 41-character name


def stars(count: int) -> str:
    """`*a*a...*ab` with `count` stars: Python's re backtracks on it exponentially."""
    return "*a" * (count - 1) + "*ab"


def literal_lines(count: int) -> list[str]:
    """An ignore file of plain names, ~7 bytes a line (1 MiB = ~144,000 lines)."""
    return [f"f{i:05d}" for i in range(count)]


def suffix_lines(count: int) -> list[str]:
    """An ignore file of `*.ext` lines (looked up in a trie, not matched one by one)."""
    return [f"*.x{i}" for i in range(count)]


def wildcard_lines(count: int) -> list[str]:
    """An ignore file where no line is simple: every one needs the regex engine."""
    return [f"*{i}*.x[a-z]?" for i in range(count)]


def per_path(match: Callable[[str], bool], paths: list[str]) -> float:
    """Seconds per `match` call, averaged over `paths`."""
    start = time.perf_counter()
    for path in paths:
        match(path)
    return (time.perf_counter() - start) / len(paths)


_PATHSPEC_ONE = """
import sys, time, pathspec
lines, path = eval(sys.stdin.read())
spec = pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")
start = time.perf_counter()
spec.match_file(path)
print(time.perf_counter() - start)
"""


def pathspec_seconds(lines: list[str], path: str, timeout: float) -> float | None:
    """pathspec's time for one match in a fresh process; None past `timeout`."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PATHSPEC_ONE],
            input=repr((lines, path)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None
    return float(done.stdout.strip())


def fmt(seconds: float | None, timeout: float) -> str:
    """Seconds as a short human figure."""
    if seconds is None:
        return f"> {timeout:.0f} s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    """Print each worst case for both matchers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller cases, shorter timeout")
    args = parser.parse_args(argv)
    timeout = 5.0 if args.quick else 30.0

    print("== one pattern with many stars, against a name of a's (no match)")
    for count, length in [(7, 25), (8, 30), (10, 36), (12, 41)]:
        pattern, name = stars(count), "a" * length
        ours = GlobSpec.from_lines([pattern])
        mine = per_path(ours.match_file, [name] * 20)
        theirs = pathspec_seconds([pattern], name, timeout)
        print(f"  {count:2d} stars, {length} chars: globs {fmt(mine, timeout):>9}"
              f"   pathspec {fmt(theirs, timeout):>9}")  # fmt: skip

    deep = "/".join(["a" * 255] * 16)  # 4,095 characters: PATH_MAX on Linux
    flat = "a" * 4095
    print(f"== the worst patterns allowed ({MAX_PATTERN_LENGTH} characters), 4 KiB paths")
    count = MAX_REGEX_CHARS // MAX_PATTERN_LENGTH
    for name, pattern in [
        ("stars *a*a...*ab", stars((MAX_PATTERN_LENGTH - 1) // 2)),
        ("DFA-hostile *a???...?b", "*a" + "?" * (MAX_PATTERN_LENGTH - 3) + "b"),
    ]:
        assert len(pattern) <= MAX_PATTERN_LENGTH
        one = GlobSpec.from_lines([pattern])
        # distinct lines (a class at the end) so RE2 sets cannot share them
        lines = [pattern[:-4] + f"[{i % 10}]" + "bcdefghijklmnopq"[i // 10] for i in range(count)]
        full = GlobSpec.from_lines(lines)
        print(f"  {name:24}: 1 line {fmt(per_path(one.match_file, [deep, flat]), timeout):>8},"
              f" {count} lines ({MAX_REGEX_CHARS} chars, the limit)"
              f" {fmt(per_path(full.match_file, [deep, flat]), timeout):>8} per path"
              "   (pathspec: exponential, not run)")  # fmt: skip

    paths = [f"src/some/dir{i % 7}/file{i}.py" for i in range(200)]
    print("== big ignore files, cost per path (compile time in brackets)")
    sizes = [1_000, MAX_PATTERNS] if args.quick else [1_000, MAX_PATTERNS, 144_000]
    kinds = [("plain names", literal_lines), ("*.ext", suffix_lines), ("wildcards", wildcard_lines)]
    for kind, make in kinds:
        for count in sizes:
            if kind != "plain names" and count > MAX_PATTERNS:
                continue
            # 10,000 wildcard lines are over MAX_REGEX_CHARS: measured past the limit
            lines = make(count)
            start = time.perf_counter()
            ours = GlobSpec.from_lines(
                lines, max_patterns=max(count, MAX_PATTERNS), max_regex_chars=1 << 30
            )
            built = time.perf_counter() - start
            mine = per_path(ours.match_file, paths)
            warm = per_path(ours.match_file, paths)
            theirs = pathspec_seconds(lines, paths[0], timeout * 4)
            print(f"  {count:7,d} {kind:11}: globs {fmt(mine, timeout):>8} (again {fmt(warm, timeout)})"
                  f" [{fmt(built, timeout)}]   pathspec {fmt(theirs, timeout):>8}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
