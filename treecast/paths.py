"""Repository paths Treecast must never deliver, whatever the repository says.

A receiver writes each delivered path under its own folder. A path with `..`
escapes it; one with a `.git` component rewrites the receiver's own repository
(`.git/hooks/post-checkout` runs code at its next checkout). Case-insensitive,
HFS+ and NTFS file systems see `.git` in more spellings than Linux does, so this
follows git's own rules (`verify_path` in read-cache.c, `is_hfs_dotgit` in
utf8.c, `is_ntfs_dotgit` in path.c), which git applies to every path it checks
out, plus the Windows forms (`..\\`, `C:`) a receiver on Windows would obey.

Everything else stays deliverable: spaces, newlines, quotes, `#`, unicode, a
backslash inside a name on POSIX, and `.gitignore`, `.github/`, `.gitmodules`.
"""

from __future__ import annotations

import re

# Code points HFS+ ignores when comparing names (git's `next_hfs_char`): `.g\u200cit`
# is `.git` there.
HFS_IGNORABLE = frozenset(
    "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"
)
_HFS_STRIP = {ord(c): None for c in HFS_IGNORABLE}

# git's is_ntfs_dotgit: `.git` or its 8.3 short name `git~1`, any case, followed only
# by dots and spaces (NTFS drops them) up to the end or a `:` (an alternate data
# stream such as `.git::$INDEX_ALLOCATION`, which is the folder itself).
_NTFS_DOTGIT = re.compile(r"(?:\.git|git~1)[. ]*(?::.*)?", re.IGNORECASE | re.DOTALL)
_DRIVE = re.compile(r"[A-Za-z]:")


def _is_hfs_dotgit(component: str) -> bool:
    return component.translate(_HFS_STRIP).lower() == ".git"


def _is_ntfs_dotgit(component: str) -> bool:
    return _NTFS_DOTGIT.fullmatch(component) is not None


def unsafe_path_reason(path: str) -> str | None:
    """Why `path` must not be delivered (one line), or None when it is safe.

    Refused: an empty path, NUL, a leading `/` or `\\`, a Windows drive (`C:`),
    empty, `.` or `..` components (split on `/`, and on `\\` for Windows
    receivers, where `.. ` and `...` mean `..` too), and any component git
    would take for `.git` on Linux, macOS (HFS+) or Windows (NTFS).
    """
    if not path:
        return "the path is empty"
    if "\0" in path:
        return "the path contains a NUL byte"
    if path.startswith(("/", "\\")):
        return "the path is absolute"
    if _DRIVE.match(path):
        return "the path starts with a Windows drive"
    for component in path.split("/"):
        if component == "":
            return "the path has an empty component (//, or a trailing /)"
        if component in (".", ".."):
            return f"the path has a {component!r} component"
        for part in component.split("\\"):
            if part in (".", ".."):
                return f"the path has a {part!r} component (Windows separates at \\)"
            if "." in part and not part.strip(". "):
                return f"the path has a {part!r} component (Windows drops trailing dots and spaces)"
            if part.lower() == ".git":
                return "the path has a .git component"
            if _is_hfs_dotgit(part):
                return "the path has a component macOS (HFS+) reads as .git"
            if _is_ntfs_dotgit(part):
                return "the path has a component Windows (NTFS) reads as .git"
    return None


def is_safe_path(path: str) -> bool:
    """True when `unsafe_path_reason` finds nothing."""
    return unsafe_path_reason(path) is None
