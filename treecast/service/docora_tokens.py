"""Bearer tokens imported from Docora: `docora_` + 64 hex, stored by Docora as bcrypt hashes.

Docora's tokens carry no id, so Docora checked a token against every app's bcrypt hash
(cost 12, about a quarter of a second each). Here the cost is bounded:

- once a token has matched, the SHA-256 of the token is stored beside its hash
  (`App.docora_token_sha256`, unique and indexed): from then on a request costs one
  indexed lookup, as a `tc_` token does. A token is 256 random bits, so a plain SHA-256
  is as strong as bcrypt here (the reasoning of `treecast.service.tokens`);
- bcrypt only runs against the imported hashes that never matched yet, and a token that
  failed is remembered (in memory, bounded) together with the hashes it was checked
  against, so repeating a wrong token costs nothing until a new app is imported.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict

from sqlmodel import Session

from treecast.store import apps as app_rows

log = logging.getLogger("treecast.api")

PREFIX = "docora_"
_TOKEN = re.compile(r"^docora_[0-9a-f]{64}$")
_REFUSED_KEEP = 4096  # wrong tokens remembered (their SHA-256 only)

_lock = threading.Lock()
# sha256(token) -> the app ids whose bcrypt hash it did not match
_refused: OrderedDict[str, frozenset[str]] = OrderedDict()


def token_sha256(token: str) -> str:
    """The stored lookup form of a verified Docora token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _bcrypt_matches(token: str, stored: str) -> bool:
    try:
        import bcrypt
    except ImportError:  # pragma: no cover - bcrypt comes with the Docora migration
        log.warning("a docora_ token cannot be checked: the bcrypt package is not installed")
        return False
    try:
        return bool(bcrypt.checkpw(token.encode(), stored.encode()))
    except ValueError:  # not a bcrypt hash
        return False


def app_for_docora_token(session: Session, token: str) -> str | None:
    """The app an imported Docora token belongs to, or None (see the module docstring).

    Stores the token's SHA-256 on its first match (committed with the caller's session).
    """
    if not _TOKEN.match(token):
        return None
    digest = token_sha256(token)
    known = app_rows.by_docora_digest(session, digest)
    if known is not None:
        return known
    candidates = app_rows.unverified_docora_hashes(session)
    with _lock:
        checked = _refused.get(digest, frozenset())
    for app_id, stored in candidates:
        if app_id in checked or stored is None:
            continue
        if _bcrypt_matches(token, stored):
            app = app_rows.get(session, app_id)
            if app is not None:
                app_rows.update(session, app, touch=False, docora_token_sha256=digest)
            with _lock:
                _refused.pop(digest, None)
            return app_id
    with _lock:
        _refused[digest] = checked | {app_id for app_id, _ in candidates}
        _refused.move_to_end(digest)
        while len(_refused) > _REFUSED_KEEP:
            _refused.popitem(last=False)
    return None


def forget_refusals() -> None:
    """Drop the remembered wrong tokens (tests)."""
    with _lock:
        _refused.clear()
