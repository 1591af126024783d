"""The admin page's logins, in the database so every API process knows every session.

The cookie holds a random session id; the table holds its SHA-256, a secret that keys
the forms' CSRF tokens (an HMAC of the session id), the expiry, when it was last seen,
its flash messages and, encrypted, what the next page shows once (a new token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import Session, col

from models.tables import AdminSession, utcnow
from treecast.crypto import Cipher

Reveal = tuple[str, list[tuple[str, str]]]  # a title and (label, value) pairs
Flash = tuple[str, str, str | None]  # kind ("ok", "error"), text, the form field it is about
MAX_FLASHES = 5
# Writing "last seen" on every page view would make every view a write.
SEEN_EVERY = timedelta(seconds=60)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class PageSession:
    """One login as a request sees it; `changed` says whether it must be saved."""

    id: str
    csrf: str  # the token this session's forms carry
    expires_at: datetime
    flashes: list[Flash] = field(default_factory=list)
    reveal: Reveal | None = None
    changed: bool = False

    def flash(self, text: str, kind: str = "ok", field: str | None = None) -> None:
        """A message for the next page this session sees (beside `field`'s input, when
        that page has the form)."""
        self.flashes = [*self.flashes, (kind, text, field)][-MAX_FLASHES:]
        self.changed = True

    def show_once(self, title: str, pairs: list[tuple[str, str]]) -> None:
        """Values (a new token, a secret) the next page shows, and no page after it."""
        self.reveal = (title, pairs)
        self.changed = True

    def take_flashes(self) -> list[Flash]:
        taken, self.flashes = self.flashes, []
        self.changed = self.changed or bool(taken)
        return taken

    def take_reveal(self) -> Reveal | None:
        taken, self.reveal = self.reveal, None
        self.changed = self.changed or taken is not None
        return taken

    def csrf_ok(self, token: str | None) -> bool:
        """The form's hidden token is this session's (constant-time)."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())


class AdminSessions:
    """Sessions in the `admin_sessions` table; expired ones are swept at every login."""

    def __init__(
        self,
        lifetime_seconds: float,
        cipher: Callable[[], Cipher],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.lifetime = timedelta(seconds=lifetime_seconds)
        self._cipher = cipher
        self._clock = clock

    def create(self, db: Session) -> PageSession:
        """A new login (and the expired ones forgotten)."""
        now = self._clock()
        session_id, csrf_secret = secrets.token_urlsafe(32), secrets.token_hex(32)
        row = AdminSession(
            id_hash=_hash(session_id),
            csrf_secret=csrf_secret,
            expires_at=now + self.lifetime,
            last_seen_at=now,
            created_at=now,
        )
        db.execute(delete(AdminSession).where(col(AdminSession.expires_at) <= now))
        db.add(row)
        return PageSession(session_id, _csrf(csrf_secret, session_id), row.expires_at)

    def get(self, db: Session, session_id: str | None) -> PageSession | None:
        """The live session with this id, or None (unknown, logged out or expired)."""
        if not session_id or len(session_id) > 200:
            return None
        now = self._clock()
        row = db.get(AdminSession, _hash(session_id))
        if row is None or _aware(row.expires_at) <= now:
            return None
        if now - _aware(row.last_seen_at) >= SEEN_EVERY:
            row.last_seen_at = now
            db.add(row)
        reveal: Reveal | None = None
        if row.reveal_encrypted:
            title, pairs = json.loads(self._cipher().decrypt(row.reveal_encrypted))
            reveal = (title, [(label, value) for label, value in pairs])
        return PageSession(
            session_id,
            _csrf(row.csrf_secret, session_id),
            _aware(row.expires_at),
            [(f[0], f[1], f[2] if len(f) > 2 else None) for f in json.loads(row.flashes)],
            reveal,
        )

    def save(self, db: Session, session: PageSession) -> None:
        """Store its flashes and what it shows once (a session ended meanwhile stays ended)."""
        encrypted = self._cipher().encrypt(json.dumps(session.reveal)) if session.reveal else None
        db.execute(
            update(AdminSession)
            .where(col(AdminSession.id_hash) == _hash(session.id))
            .values(flashes=json.dumps(session.flashes), reveal_encrypted=encrypted)
        )
        session.changed = False

    def end(self, db: Session, session_id: str | None) -> None:
        """Log out: the session ends for every API process."""
        if session_id:
            db.execute(delete(AdminSession).where(col(AdminSession.id_hash) == _hash(session_id)))


def _csrf(secret: str, session_id: str) -> str:
    """A form token: useless without the session's cookie, and not stored anywhere."""
    return hmac.new(secret.encode(), session_id.encode(), hashlib.sha256).hexdigest()
