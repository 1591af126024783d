"""What an app says it holds, checked line by line, and how it differs from its ledger.

Pure. The app sends JSON Lines, one file a line (`{"path": ..., "blob_id": ...}`, an
optional `sha256` of the content; a manifest's `size` and `mode` are allowed and ignored,
and so is a manifest's header as the first line), sorted by the UTF-8 bytes of the path,
as the digest is. Each line is hostile until checked: its length, JSON, fields, the path
(`treecast.paths`, as for a delivered path), the blob id (the repository's hash), the
order and the count. Both sides arrive sorted, so comparing them is one merge that holds
neither list in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from treecast.delivery.digest import SHA1, SHA256, is_blob_id, path_key
from treecast.paths import unsafe_path_reason

MAX_LINE_BYTES = 16 * 1024  # a 4 KiB path escaped as JSON, and a blob id, fit easily
_FIELDS = frozenset({"path", "blob_id", "sha256", "size", "mode"})


class HeldError(ValueError):
    """A line the app sent that is refused; the message names the line and says why."""


@dataclass(frozen=True, slots=True)
class HeldFile:
    """One file the app says it holds."""

    path: str
    blob_id: str
    sha256: str = ""  # of its content, when the app said


@dataclass(frozen=True)
class HeldLimits:
    """What one reconcile accepts (`TREECAST_RECONCILE_*`, `TREECAST_TREE_MAX_PATH_BYTES`)."""

    max_files: int
    max_path_bytes: int
    object_format: str = SHA1  # the repository's hash: blob ids are 40 (or 64) hex digits


def _line_error(number: int, why: str) -> HeldError:
    return HeldError(f"line {number}: {why}")


def parse_held(lines: Iterable[bytes], limits: HeldLimits) -> Iterator[HeldFile]:
    """The files on `lines` (bytes, each one line), checked; raises `HeldError` at the
    first line refused."""
    last: bytes | None = None
    count = 0
    digits = 64 if limits.object_format == SHA256 else 40
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise _line_error(number, f"longer than {MAX_LINE_BYTES} bytes")
        line = raw.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise _line_error(number, "not a JSON object") from None
        if not isinstance(item, dict):
            raise _line_error(number, "not a JSON object")
        if count == 0 and last is None and "manifest" in item:
            continue  # a manifest's header, sent back with its lines
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise _line_error(number, f"unknown field {unknown[0][:40]!r}")
        path, blob_id, sha256 = item.get("path"), item.get("blob_id"), item.get("sha256", "")
        if not isinstance(path, str):
            raise _line_error(number, "path must be a string")
        try:
            key = path_key(path)
        except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape
            raise _line_error(number, "the path is not valid UTF-8") from None
        reason = unsafe_path_reason(path)
        if reason is None and len(key) > limits.max_path_bytes:
            reason = f"the path is longer than {limits.max_path_bytes} bytes"
        if reason is not None:
            raise _line_error(number, f"path {path[:80]!r} refused: {reason}")
        if not is_blob_id(blob_id, limits.object_format):
            raise _line_error(
                number, f"blob_id of {path[:80]!r} must be {digits} lowercase hex digits"
            )
        assert isinstance(blob_id, str)
        if sha256 and not is_blob_id(sha256, SHA256):
            raise _line_error(number, f"sha256 of {path[:80]!r} must be 64 lowercase hex digits")
        if last is not None and key <= last:
            raise _line_error(
                number,
                f"{path[:80]!r} is out of order or repeated: sort the lines by the UTF-8 "
                "bytes of their paths",
            )
        last = key
        count += 1
        if count > limits.max_files:
            raise _line_error(
                number, f"more than {limits.max_files} files (TREECAST_RECONCILE_MAX_FILES)"
            )
        yield HeldFile(path, blob_id, str(sha256 or ""))


def in_path_order(lines: Iterable[bytes]) -> list[bytes]:
    """`lines` sorted by their paths (for a file a person hands over, whose size the caller
    bounded): a line without a string `path` stays first, where `parse_held` refuses it."""

    def key(line: bytes) -> tuple[int, bytes]:
        try:
            item = json.loads(line)
            path = item.get("path") if isinstance(item, dict) else None
            return (1, path_key(path)) if isinstance(path, str) else (0, b"")
        except (ValueError, UnicodeError):
            return 0, b""

    return sorted((line for line in lines if line.strip()), key=key)


class Drift(StrEnum):
    """How one path differs between the app's copy and its ledger."""

    MISSING = "missing"  # Treecast delivered it; the app does not have it
    CHANGED = "changed"  # the app has other content there
    EXTRA = "extra"  # the app has a file Treecast never delivered (or deleted)


@dataclass(frozen=True, slots=True)
class Difference:
    """One path that differs; `held` is the app's file (None when it lacks it)."""

    drift: Drift
    path: str
    held: HeldFile | None


@dataclass
class Comparison:
    """What a comparison found: counts, and (when kept) the differences themselves."""

    held: int = 0
    recorded: int = 0
    counts: dict[Drift, int] = field(default_factory=lambda: dict.fromkeys(Drift, 0))
    differences: list[Difference] = field(default_factory=list)

    @property
    def differ(self) -> int:
        """Paths that differ."""
        return sum(self.counts.values())


def compare(
    held: Iterable[HeldFile], recorded: Iterable[tuple[str, str]], *, keep: bool
) -> Comparison:
    """Merge the app's files with its ledger rows (path, blob id), both in the digest's
    order; `keep` the differences (for a repair) or only count them (a verify)."""
    result = Comparison()

    def note(drift: Drift, path: str, mine: HeldFile | None) -> None:
        result.counts[drift] += 1
        if keep:
            result.differences.append(Difference(drift, path, mine))

    theirs = iter(held)
    ours = iter(recorded)
    mine = next(theirs, None)
    row = next(ours, None)
    while mine is not None or row is not None:
        if row is None or (mine is not None and path_key(mine.path) < path_key(row[0])):
            assert mine is not None
            result.held += 1
            note(Drift.EXTRA, mine.path, mine)
            mine = next(theirs, None)
        elif mine is None or path_key(row[0]) < path_key(mine.path):
            result.recorded += 1
            note(Drift.MISSING, row[0], None)
            row = next(ours, None)
        else:
            result.held += 1
            result.recorded += 1
            if mine.blob_id != row[1]:
                note(Drift.CHANGED, mine.path, mine)
            mine, row = next(theirs, None), next(ours, None)
    return result
