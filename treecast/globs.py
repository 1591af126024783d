"""Gitignore-style globs matched in linear time, for hostile `.treecastignore` files and globs.

`pathspec.GitIgnoreSpec` translates each line into a Python regular expression
and runs it with `re`, which backtracks: `*a*a*a*a*a*a*a*a*a*a*a*ab` against a
41-character name takes minutes, and a 1 MiB ignore file costs tens of
milliseconds per path. Any repository pusher or app owner could stall a worker
that way. `GlobSpec` keeps pathspec's translation (so its semantics are exactly
pathspec's: negation, directory patterns, anchoring, `**`, classes, escapes,
trailing spaces) but runs it on RE2, whose cost is bounded by pattern length
times path length. It also:

* looks literal patterns (`node_modules`, `/build`, `dist/`) up in dicts instead
  of matching them one by one, so huge ignore files of plain names stay cheap;
* matches the other patterns in `re2.Set`s of `SET_SIZE`, one pass per set;
* refuses more than `MAX_PATTERNS` patterns, a line longer than
  `MAX_PATTERN_LENGTH`, or more than `MAX_REGEX_CHARS` characters of patterns
  that need the regex engine, with a `ValueError`; and lets a caller skip an invalid
  line with a warning (`on_invalid=skip_with_warning("...")`).

Decision rule (pathspec's default backend): among the patterns that match the
path itself, the last one decides; if none does, the last pattern that matches
one of its parent directories decides; `!` patterns re-include.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import re2
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern
from pathspec.util import normalize_file

log = logging.getLogger(__name__)

MAX_PATTERNS = 10_000
MAX_PATTERN_LENGTH = 1024
# Characters of patterns that need the regex engine (not plain names, `/paths` or
# `*.ext`): matching costs up to ~12 ns x these x the path's length (bench/globs.py:
# 16 DFA-hostile 1 KiB lines take 0.8 s on a 4 KiB path, 28 ms for one line).
MAX_REGEX_CHARS = 16 * 1024
SET_SIZE = 256  # patterns per re2.Set: small sets keep RE2's DFA within its memory budget
RE2_MAX_MEM = 64 << 20  # bytes each compiled set may use

InvalidLine = Callable[[str, str], None]

_DIR_OPTIONAL = "(?:(?P<ps_d>/)|$)"  # pathspec: the pattern matches a file or a directory
_DIR_GROUP = "(?P<ps_d>/)"  # pathspec: the pattern matches a directory (of the path)
_UNANCHORED = "^(?:.+/)?"
_STAR = "[^/]*"
_LITERAL_BODY = re.compile(r"(?:\\[^A-Za-z0-9]|[^\\.^$*+?{}\[\]|()])+")


def skip_with_warning(what: str) -> InvalidLine:
    """An `on_invalid` callback that logs and skips the line, as Treecast did with pathspec.

    One bad line in a repository's ignore file must not fail every sync.
    """

    def warn(line: str, reason: str) -> None:
        log.warning("ignoring the invalid %s pattern %r: %s", what, line[:200], reason)

    return warn


@dataclass(frozen=True, slots=True)
class _Variant:
    """One regular expression of a pattern: it matches the path itself or a parent folder."""

    index: int  # the pattern's position (later patterns win)
    regex: str  # RE2 syntax
    is_dir: bool


@dataclass
class _Literals:
    """Literal patterns, by kind: value is the last index of a pattern with that text."""

    any_file: dict[str, int] = field(default_factory=dict)  # `name`: a path component
    any_dir: dict[str, int] = field(default_factory=dict)  # `name`, `name/`: a parent folder
    root_file: dict[str, int] = field(default_factory=dict)  # `/a/b`: the whole path
    root_dir: dict[str, int] = field(default_factory=dict)  # `/a/b`, `/a/b/`: a parent path
    root_dir_lengths: set[int] = field(default_factory=set)

    @staticmethod
    def put(table: dict[str, int], key: str, index: int) -> None:
        table[key] = max(index, table.get(key, -1))


def _python_dollar_to_re2(regex: str) -> str:
    """Python's `$` also matches before a final newline; RE2's does not. Keep Python's."""
    if regex.endswith("$"):
        backslashes = len(regex) - 1 - len(regex[:-1].rstrip("\\"))
        if backslashes % 2 == 0:
            return regex[:-1] + r"\n?$"
    return regex


def _python_classes_to_re2(regex: str) -> str:
    """Escape `[` inside character classes: RE2 reads `[[:alpha:]]` as a POSIX class, Python
    as the characters `[:alph`. Python's reading is the reference."""
    out: list[str] = []
    i, n = 0, len(regex)
    while i < n:
        char = regex[i]
        if char == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if char != "[":
            out.append(char)
            i += 1
            continue
        out.append("[")
        i += 1
        if i < n and regex[i] == "^":
            out.append("^")
            i += 1
        if i < n and regex[i] == "]":  # a leading `]` is literal in Python
            out.append(r"\]")
            i += 1
        while i < n and regex[i] != "]":
            if regex[i] == "\\":
                out.append(regex[i : i + 2])
                i += 2
            elif regex[i] == "[":
                out.append(r"\[")
                i += 1
            else:
                out.append(regex[i])
                i += 1
        if i < n:
            out.append("]")
            i += 1
    return "".join(out)


def _variants(index: int, regex: str) -> list[_Variant]:
    """pathspec's regex as RE2 regexes, split into 'matches the path' and 'matches a folder'."""
    regex = _python_classes_to_re2(regex)
    if regex.endswith(_DIR_OPTIONAL):
        base = regex[: -len(_DIR_OPTIONAL)]
        return [
            _Variant(index, base + r"\n?$", is_dir=False),
            _Variant(index, base + "/", is_dir=True),
        ]
    if _DIR_GROUP in regex:
        return [_Variant(index, regex.replace(_DIR_GROUP, "/"), is_dir=True)]
    return [_Variant(index, _python_dollar_to_re2(regex), is_dir=False)]


def _simple(regex: str) -> tuple[str, str, bool] | None:
    """(kind, text, dir_only) when pathspec's regex needs no regex engine, else None.

    Kinds: "root" (`/a/b`: the path or a parent path is `text`), "any" (`name`: a
    component is `text`), "suffix" (`*.log`: a component ends with `text`).
    """
    if regex.endswith(_DIR_OPTIONAL):
        rest, dir_only = regex[: -len(_DIR_OPTIONAL)], False
    elif regex.endswith(_DIR_GROUP):
        rest, dir_only = regex[: -len(_DIR_GROUP)], True
    else:
        return None
    if rest.startswith(_UNANCHORED + _STAR):
        body, kind = rest[len(_UNANCHORED + _STAR) :], "suffix"
    elif rest.startswith(_UNANCHORED):
        body, kind = rest[len(_UNANCHORED) :], "any"
    elif rest.startswith("^"):
        body, kind = rest[1:], "root"
    else:
        return None
    if not _LITERAL_BODY.fullmatch(body):
        return None
    text = re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)
    if not text or "\n" in text or (kind != "root" and "/" in text):
        return None
    return kind, text, dir_only


class _SuffixTrie:
    """Reversed texts of `*text` patterns: one walk per component finds every match."""

    __slots__ = ("children", "dir_index", "file_index")

    def __init__(self) -> None:
        self.children: dict[str, _SuffixTrie] = {}
        self.file_index = -1
        self.dir_index = -1

    def add(self, text: str, index: int, dir_only: bool) -> None:
        node = self
        for char in reversed(text):
            node = node.children.setdefault(char, _SuffixTrie())
        if not dir_only:
            node.file_index = max(node.file_index, index)
        node.dir_index = max(node.dir_index, index)

    def best(self, component: str, is_file: bool) -> int:
        """The last pattern whose text ends `component`."""
        node, best = self, -1
        for char in reversed(component):
            found = node.children.get(char)
            if found is None:
                break
            node = found
            best = max(best, node.file_index if is_file else node.dir_index)
        return best


class _RegexSet:
    """Up to SET_SIZE variants matched in one RE2 pass; each regex alone if RE2 gives up."""

    def __init__(self, variants: list[_Variant]) -> None:
        self.variants = variants
        options = re2.Options()
        options.max_mem = RE2_MAX_MEM
        options.log_errors = False
        self._set: Any = re2.Set.SearchSet(options)  # pathspec uses re.search
        for variant in variants:
            self._set.Add(variant.regex)
        # Always matches: a set that answers nothing has run out of memory (RE2::Set has
        # no fallback), and must not be read as "no pattern matched".
        self._sentinel = self._set.Add("")
        self._singles: list[Any] | None = None
        try:
            self._set.Compile()
        except re2.error:  # too big for max_mem: match the regexes one by one
            self._set = None
            self._compile_singles()

    def _compile_singles(self) -> list[Any]:
        if self._singles is None:
            options = re2.Options()
            options.log_errors = False
            self._singles = [re2.compile(v.regex, options) for v in self.variants]
        return self._singles

    def matches(self, text: bytes) -> list[_Variant]:
        """The variants that match `text` (UTF-8)."""
        if self._set is not None:
            ids = self._set.Match(text)
            if ids:
                return [self.variants[i] for i in ids if i != self._sentinel]
        singles = self._compile_singles()
        return [v for v, r in zip(self.variants, singles, strict=True) if r.search(text)]


def _translate(line: str, max_pattern_length: int) -> tuple[str | None, bool | None]:
    """pathspec's (regex, include) for a line, checked to compile on both engines.

    Literal patterns skip the checks (their regex is valid by construction): a big
    ignore file of plain names then compiles in a fraction of the time.
    """
    if len(line) > max_pattern_length:
        raise ValueError(f"longer than {max_pattern_length} characters")
    regex, include = GitIgnoreSpecPattern.pattern_to_regex(line)
    if regex is None or include is None or _simple(regex) is not None:
        return regex, include
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set"
            re.compile(regex)  # what pathspec does: the same lines are invalid
    except re.error as exc:  # e.g. `[z-a]`: pathspec lets re's own error through
        raise ValueError(str(exc)) from None
    for variant in _variants(0, regex):
        try:
            re2.compile(variant.regex)
        except re2.error as exc:
            raise ValueError(f"not a supported pattern ({exc})") from None
    return regex, include


class GlobSpec:
    """Compiled gitignore patterns; `match_file` costs O(pattern length x path length)."""

    def __init__(self, patterns: list[tuple[str, bool]]) -> None:
        """From (pathspec regex, include) pairs; use `from_lines`."""
        self._include = [include for _, include in patterns]
        self._literals = _Literals()
        self._suffixes = _SuffixTrie()
        simple: dict[tuple[str, bool], _Variant] = {}
        other: dict[tuple[str, bool], _Variant] = {}
        lits = self._literals
        for index, (regex, _include) in enumerate(patterns):
            found = _simple(regex)
            # Equal regexes of one kind match equally: only the last of them can decide.
            # (Not across kinds: `x*/**` matches `^x[^/]*/` as a file, `/x*` as a folder.)
            for variant in _variants(index, regex):
                (other if found is None else simple)[variant.regex, variant.is_dir] = variant
            if found is None:
                continue
            kind, text, dir_only = found
            if kind == "suffix":
                self._suffixes.add(text, index, dir_only)
            elif kind == "root":
                if not dir_only:
                    lits.put(lits.root_file, text, index)
                lits.put(lits.root_dir, text, index)
                lits.root_dir_lengths.add(len(text))
            else:
                if not dir_only:
                    lits.put(lits.any_file, text, index)
                lits.put(lits.any_dir, text, index)
        self._has_suffixes = bool(self._suffixes.children)
        rest = sorted(other.values(), key=lambda v: v.index)
        literal_variants = sorted(simple.values(), key=lambda v: v.index)
        self._sets = [_RegexSet(rest[i : i + SET_SIZE]) for i in range(0, len(rest), SET_SIZE)]
        # Paths with a newline go through RE2 for the literals too (Python's `.` and `$`
        # treat newlines specially); built on first use, as such paths are rare.
        self._literal_variants = literal_variants
        self._literal_sets: list[_RegexSet] | None = None

    @classmethod
    def from_lines(
        cls,
        lines: Iterable[str],
        *,
        max_patterns: int = MAX_PATTERNS,
        max_pattern_length: int = MAX_PATTERN_LENGTH,
        max_regex_chars: int = MAX_REGEX_CHARS,
        on_invalid: InvalidLine | None = None,
    ) -> GlobSpec:
        """Compile gitignore lines (blank lines and `#` comments are skipped).

        An invalid line raises ValueError naming it, unless `on_invalid(line, reason)`
        is given: then it is called and the line skipped. More than `max_patterns`
        patterns, or more than `max_regex_chars` characters of patterns needing the
        regex engine, always raise ValueError: matching cost grows with them.
        """
        patterns: list[tuple[str, bool]] = []
        regex_chars = 0
        for number, line in enumerate(lines, 1):
            try:
                regex, include = _translate(line, max_pattern_length)
            except ValueError as exc:
                reason = str(exc).splitlines()[0] if str(exc) else "invalid"
                if on_invalid is None:
                    raise ValueError(f"pattern line {number} {line[:80]!r}: {reason}") from None
                on_invalid(line, reason)
                continue
            if regex is None or include is None:
                continue
            if len(patterns) >= max_patterns:
                raise ValueError(
                    f"more than {max_patterns} patterns; combine them (e.g. with * or a folder/)"
                )
            if _simple(regex) is None:
                regex_chars += len(line)
                if regex_chars > max_regex_chars:
                    raise ValueError(
                        f"the wildcard patterns total more than {max_regex_chars} characters "
                        "(plain names, /paths and *.ext do not count); simplify them"
                    )
            patterns.append((regex, include))
        return cls(patterns)

    def __len__(self) -> int:
        return len(self._include)

    def match_file(self, path: str) -> bool:
        """True when the patterns select `path` (for an ignore file: the path is ignored)."""
        if not self._include:
            return False
        path = normalize_file(path)
        best_file = best_dir = -1
        if "\n" in path:
            if self._literal_sets is None:
                lv = self._literal_variants
                self._literal_sets = [
                    _RegexSet(lv[i : i + SET_SIZE]) for i in range(0, len(lv), SET_SIZE)
                ]
            sets = self._sets + self._literal_sets
        else:
            sets = self._sets
            best_file, best_dir = self._match_literals(path)
        text = path.encode("utf-8", errors="surrogatepass")
        for regex_set in sets:
            for variant in regex_set.matches(text):
                if variant.is_dir:
                    best_dir = max(best_dir, variant.index)
                else:
                    best_file = max(best_file, variant.index)
        index = best_file if best_file >= 0 else best_dir
        return index >= 0 and self._include[index]

    def _match_literals(self, path: str) -> tuple[int, int]:
        """The last simple pattern matching the path, and one matching a parent folder."""
        lits = self._literals
        best_file = best_dir = -1
        if lits.any_file or lits.any_dir or self._has_suffixes:
            parts = path.split("/")
            last = len(parts) - 1
            suffixes = self._suffixes if self._has_suffixes else None
            for m, part in enumerate(parts):
                # `^(?:.+/)?name`: the text before the component's slash must not be empty
                if m == 1 and not parts[0]:
                    continue
                if m == last:
                    best_file = max(best_file, lits.any_file.get(part, -1))
                    if suffixes is not None:
                        best_file = max(best_file, suffixes.best(part, is_file=True))
                else:
                    best_dir = max(best_dir, lits.any_dir.get(part, -1))
                    if suffixes is not None:
                        best_dir = max(best_dir, suffixes.best(part, is_file=False))
        if lits.root_file:
            best_file = max(best_file, lits.root_file.get(path, -1))
        if lits.root_dir:
            lengths = lits.root_dir_lengths
            start = 0
            while (slash := path.find("/", start)) >= 0:
                if slash in lengths:
                    best_dir = max(best_dir, lits.root_dir.get(path[:slash], -1))
                start = slash + 1
        return best_file, best_dir
