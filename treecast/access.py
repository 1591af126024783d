"""Does the git host let these credentials (or none) read this repository? One `ls-remote`.

Used when an app asks to watch a repository or changes its credentials (before anything
is saved, within `ACCESS_CHECK_SECONDS`), and by the snapshot for each app whose access
is due to be checked again (`treecast.store.access`). Only an answer from the host that
says no is a refusal; a host that cannot be reached says nothing about the credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session

from models.git import GitErrorType
from models.tables import WatchAccess, utcnow
from treecast.config import Settings
from treecast.credentials.github_app import forget_refused
from treecast.gitcache.command import AnyCredentials, Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.refcheck import check_patterns
from treecast.gitcache.remote import SyncOutcome, ls_remote
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.redact import redact
from treecast.remote_access import decrypt, unregistered
from treecast.store import access as access_store
from treecast.store.credentials import StoredCredentials, fetch_order, identity
from treecast.store.watches import deliverable_globs, every_watch_has_paths

# An access check while a person waits (watch time) gives up after this long.
ACCESS_CHECK_SECONDS = 20.0

# The host's own "no": these credentials (or none) do not read this repository.
REFUSALS = frozenset(
    {
        GitErrorType.AUTHENTICATION_FAILED,
        GitErrorType.REPOSITORY_NOT_FOUND,  # how GitHub and GitLab hide a private repository
        GitErrorType.HOST_KEY_MISMATCH,
        GitErrorType.URL_REFUSED,
    }
)


class Verdict(StrEnum):
    """What an access check found."""

    GRANTED = "granted"  # the host listed the ref (or said it has no such ref) for them
    REFUSED = "refused"  # the host said no
    UNKNOWN = "unknown"  # no answer (network, timeout): nothing is concluded


@dataclass(frozen=True)
class AccessCheck:
    """A verdict and, unless granted, the git error behind it (redacted)."""

    verdict: Verdict
    error_type: str | None = None
    message: str | None = None

    def reason(self) -> str:
        """`type: message`, for people."""
        return f"{self.error_type}: {self.message}" if self.error_type else str(self.verdict)


def refusal(error: GitError) -> AccessCheck:
    """The verdict a failed git command (or token minting) stands for."""
    verdict = Verdict.REFUSED if error.type in REFUSALS else Verdict.UNKNOWN
    return AccessCheck(verdict, error.type, error.message)


def probe(
    settings: Settings,
    url: str,
    ref: str,
    credentials: AnyCredentials | None,
    *,
    timeout: float | None = None,
) -> AccessCheck:
    """Ask the host for the watched ref with `credentials` (None: anonymously). A commit
    id is never listed, so then it asks for HEAD: the question is the access, not the ref.
    `timeout` caps git's own (TREECAST_GIT_TIMEOUT_SECONDS)."""
    if timeout is not None:
        settings = settings.model_copy(
            update={"git_timeout_seconds": min(settings.git_timeout_seconds, timeout)}
        )
    patterns = check_patterns(ref) or ["HEAD"]
    try:
        ls_remote(settings, url, credentials, patterns)
    except GitError as error:
        return refusal(error)
    except OSError as error:  # git itself could not run
        secrets = credentials.secrets() if credentials is not None else []
        return AccessCheck(Verdict.UNKNOWN, GitErrorType.OTHER, redact(str(error), secrets))
    return AccessCheck(Verdict.GRANTED)


@dataclass
class _Holder:
    """One watch as an access run sees it (a detached copy of its row)."""

    app_id: str
    stored: StoredCredentials
    identity: tuple[str, ...]
    due: bool
    # Delivered to while its access holds: asked again before a new commit reaches it.
    deliverable: bool


class AccessRun:
    """One snapshot's access work for a repository: fetch with the first credentials the
    host accepts (the app that fetched last first, then the other apps', then none), then
    check each app due a check; `save` records what the host said of each.

    Apps holding the same credentials are checked once. Nothing is recorded when no
    credentials fetched: a repository that fails for everyone is its breaker's business.
    """

    def __init__(self, settings: Settings, repository_id: str, session: Session) -> None:
        """Read the repository and its watches in `session` (the snapshot's reads)."""
        self.settings = settings
        self.repository_id = repository_id
        found = access_store.watchers_of(session, repository_id)
        if found is None:
            raise unregistered(repository_id)
        repository, watches = found
        self.url, self.ref = repository.url, repository.ref or ""
        order = [w.app_id for w in fetch_order(repository, watches)]
        now = utcnow()
        every = access_store.recheck_seconds(settings, repository)
        self._holders = {
            w.app_id: _Holder(
                w.app_id,
                StoredCredentials.of(w),
                identity(settings, StoredCredentials.of(w)),
                access_store.is_due(w, now, every),
                w.access in WatchAccess.DELIVERABLE,
            )
            for w in watches
        }
        # Every watch narrows the repository with `paths`: fetch by what is watched, the
        # files of a new commit those still delivered to receive with it.
        self.partial = every_watch_has_paths([w.path_globs for w in watches])
        self.watched = deliverable_globs(watches) if self.partial else []
        self._order = [self._holders[a] for a in order]
        self._verdicts: dict[tuple[str, ...], AccessCheck] = {}
        self._credentials: dict[tuple[str, ...], AnyCredentials | None] = {}
        self.fetched_with: str | None = None

    def _decrypted(self, holder: _Holder | None) -> AnyCredentials | None:
        """The holder's credentials (None: anonymous); a GitHub App token is minted here
        (raising its GitError when GitHub refuses)."""
        if holder is None:
            return None
        if holder.identity not in self._credentials:
            self._credentials[holder.identity] = decrypt(self.settings, holder.stored)
        return self._credentials[holder.identity]

    def fetch(
        self, cache: RepositoryCache, secrets: list[str], *, partial: bool = False
    ) -> SyncOutcome:
        """`cache.sync` (`partial`: by what is watched) with the first credentials the host
        accepts; `secrets` gets every form of those tried (for redaction). Raises the first
        refusal when none did; any other git error ends the tries at once (it is the
        repository's, not the credentials')."""
        first: GitError | None = None
        anonymous = ("none",)
        for holder in [*self._order, None]:
            key = holder.identity if holder is not None else anonymous
            if key in self._verdicts:
                continue  # the same credentials were just refused
            try:
                credentials = self._decrypted(holder)
            except GitError as error:
                self._verdicts[key] = refusal(error)
                first = first or error
                continue
            access = RemoteAccess(self.repository_id, self.url, self.ref, credentials)
            secrets.extend(access.secrets())
            try:
                outcome = cache.sync(access, partial=partial, watched=self.watched)
            except GitError as error:
                if error.type not in REFUSALS:
                    # The repository's trouble, not the credentials': no use trying more.
                    # A refusal before it said more about why the first choice failed.
                    raise (first or error) from None
                if error.type == GitErrorType.AUTHENTICATION_FAILED and isinstance(
                    credentials, Credentials
                ):
                    forget_refused(credentials.token)  # a GitHub App token revoked early
                self._verdicts[key] = refusal(error)
                first = first or error
                continue
            self._verdicts[key] = AccessCheck(Verdict.GRANTED)
            self.fetched_with = holder.app_id if holder is not None else None
            return outcome
        assert first is not None
        raise first

    def check_due(self, *, new_commit: bool = False) -> None:
        """Ask the host about each app due a check whose credentials the fetch did not
        already answer for. A `new_commit` is new content: every app it would be delivered
        to is asked now, however recently it was checked, so that an app whose credentials
        were revoked since never receives it (another app's credentials fetched it)."""
        for holder in self._holders.values():
            asked = holder.due or (new_commit and holder.deliverable)
            if not asked or holder.identity in self._verdicts:
                continue
            try:
                credentials = self._decrypted(holder)
            except GitError as error:
                self._verdicts[holder.identity] = refusal(error)
                continue
            self._verdicts[holder.identity] = probe(self.settings, self.url, self.ref, credentials)

    def save(self, session: Session) -> list[str]:
        """Record each app's verdict and whose credentials fetched, in `session`; the apps
        that just lost their access (each gets one `sync_failed`)."""
        granted: list[tuple[str, StoredCredentials]] = []
        refused: list[tuple[str, StoredCredentials, str]] = []
        for holder in self._holders.values():
            check = self._verdicts.get(holder.identity)
            if check is None or check.verdict == Verdict.UNKNOWN:
                continue
            if check.verdict == Verdict.GRANTED:
                granted.append((holder.app_id, holder.stored))
            else:
                message = access_store.lost_access_message(
                    self.url,
                    self.repository_id,
                    check.reason(),
                    has_credentials=holder.identity != ("none",),
                )
                refused.append((holder.app_id, holder.stored, message))
        expiries = {
            h.app_id: h.stored.github_token_expires_at
            for h in self._holders.values()
            if h.stored.github_app_key_encrypted
        }
        return access_store.record_verdicts(
            session, self.repository_id, granted, refused, self.fetched_with, expiries
        )
