"""Scrub secrets out of text before it reaches a log, an error, the database or a webhook."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_PATTERNS = (
    # credentials in URLs: scheme://user:pass@host or scheme://token@host
    (re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@"), r"\g<scheme>" + MASK + "@"),
    # Authorization / extra headers passed to git or http
    (re.compile(r"(?i)(authorization:\s*(basic|bearer|token)?\s*)[^\s'\"]+"), r"\1" + MASK),
    # well-known token shapes
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_" + MASK),
    (re.compile(r"\b(ghp|gho|ghu|ghs|ghr|github_pat|glpat)_[A-Za-z0-9_]+"), MASK),
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every given secret and every credential-looking pattern replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
