"""The tree digest: one hash over every path an app should hold and its git blob id.

Defined in docs/webhooks.md ("Verifying a mirror") so a receiver computes the same value
over its own files in a few lines: SHA-256 over, for each file in ascending order of the
UTF-8 bytes of its path, `path` NUL `blob id` LF. The blob id is git's: SHA-1 (or
SHA-256 in a SHA-256 repository) of `blob <size>` NUL and the content. Mode and size are
left out: the blob id decides the content, and receivers rarely keep modes. Pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

SHA1 = "sha1"
SHA256 = "sha256"
# The digest of an empty tree (no file for the app): SHA-256 of nothing.
EMPTY_DIGEST = hashlib.sha256().hexdigest()
_HEX = frozenset("0123456789abcdef")


def object_format_of(object_id: str) -> str:
    """`sha1` or `sha256`, from the length of a commit or blob id."""
    return SHA256 if len(object_id) == 64 else SHA1


def is_blob_id(value: object, object_format: str) -> bool:
    """True for a lowercase hex object id of the repository's hash (40 or 64 characters)."""
    return (
        isinstance(value, str)
        and len(value) == (64 if object_format == SHA256 else 40)
        and set(value) <= _HEX
    )


def git_blob_id(data: bytes, object_format: str = SHA1) -> str:
    """The id git gives a blob with these bytes (`git hash-object`)."""
    return hashlib.new(object_format, b"blob %d\0" % len(data) + data).hexdigest()


def path_key(path: str) -> bytes:
    """The sort key of the digest's order: the path's UTF-8 bytes (the same order as
    Python's `sorted` on str, and as git lists a tree)."""
    return path.encode("utf-8")


class TreeDigest:
    """The digest fed file by file, in order; refuses a path out of order, so a digest
    over a list that is not sorted (or has a path twice) is never produced."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._last: bytes | None = None
        self.files = 0

    def add(self, path: str, blob_id: str) -> None:
        """The next file; raises ValueError when `path` does not come after the last."""
        key = path_key(path)
        if self._last is not None and key <= self._last:
            raise ValueError(f"{path!r} does not come after {self._last.decode()!r}")
        self._last = key
        self._hash.update(key + b"\0" + blob_id.encode("ascii") + b"\n")
        self.files += 1

    def hexdigest(self) -> str:
        """The digest of the files added so far (lowercase hex)."""
        return self._hash.hexdigest()


def tree_digest(files: Iterable[tuple[str, str]]) -> str:
    """The digest of (path, blob id) pairs in any order (sorted here: for small sets)."""
    return digest_of(sorted(files, key=lambda item: path_key(item[0])))[0]


def digest_of(ordered: Iterable[tuple[str, str]]) -> tuple[str, int]:
    """The digest of (path, blob id) pairs already in the digest's order (a stream), and
    how many there were; ValueError when they are not in order."""
    digest = TreeDigest()
    for path, blob_id in ordered:
        digest.add(path, blob_id)
    return digest.hexdigest(), digest.files


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file an app should hold: its path, git blob id, size in bytes and git mode."""

    path: str
    blob_id: str
    size: int
    mode: str

    def json_line(self) -> bytes:
        """The entry as one line of the manifest (compact JSON and a newline)."""
        fields = {"path": self.path, "blob_id": self.blob_id, "size": self.size, "mode": self.mode}
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
