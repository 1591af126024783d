"""A receiver's tree digest written from docs/webhooks.md ("Verifying a mirror") alone: it
imports nothing of Treecast (tests/delivery/test_mirror_digest.py checks that), so a test that it
agrees with Treecast's own checks the definition, not one implementation against itself.
"""

from __future__ import annotations

import hashlib
import os


def blob_id(data: bytes, object_format: str = "sha1") -> str:
    """git's blob id: the hash of `blob <size>` NUL and the bytes."""
    header = b"blob " + str(len(data)).encode() + b"\x00"
    return hashlib.new(object_format, header + data).hexdigest()


def digest_of_files(files: dict[str, bytes], object_format: str = "sha1") -> str:
    """The tree digest of files given as path -> content."""
    total = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.encode("utf-8")):
        blob = blob_id(files[path], object_format)
        total.update(path.encode("utf-8") + b"\x00" + blob.encode("ascii") + b"\n")
    return total.hexdigest()


def digest_of_folder(root: str, object_format: str = "sha1") -> str:
    """The tree digest of every file under `root`."""
    files: dict[str, bytes] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, "rb") as handle:
                files[os.path.relpath(full, root).replace(os.sep, "/")] = handle.read()
    return digest_of_files(files, object_format)
