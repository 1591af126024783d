"""An app's own access to a repository, checked against the git host before it is saved.

Whoever asks (the app through the API, or an operator for it), an app watches a
repository, or changes the credentials it reaches it with, only once the host has
accepted those credentials (none, for a repository that answers anonymously): one
`ls-remote` of the watched ref within `ACCESS_CHECK_SECONDS`. A deploy key Treecast has
just generated cannot be on the host yet, and dropping credentials (`clear`) grants
nothing: both are saved as pending, and nothing is delivered to the app until a sync
finds the host accepts what it holds (docs/security.md, "Tenants").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from treecast.access import ACCESS_CHECK_SECONDS, AccessCheck, Verdict, probe, refusal
from treecast.config import Settings
from treecast.credentials.ssh_keys import generate_deploy_key
from treecast.crypto import Cipher
from treecast.gitcache.errors import GitError
from treecast.remote_access import decrypt
from treecast.service import credentials as creds
from treecast.service.credentials import CredentialSpec, Planned
from treecast.service.errors import RefusedUrl
from treecast.store.credentials import StoredCredentials


class AccessRefused(RefusedUrl):
    """The git host did not accept the app's credentials (or, without any, the repository
    does not answer anonymously); nothing was saved (HTTP 422)."""


GENERATED = "a generated deploy key: add its public key to the git host, then sync"
CLEARED = "its credentials were dropped: a sync checks whether the repository answers without"


@dataclass
class Checked:
    """Credentials to store on a watch, and what the host said of them (None: not asked,
    pending for `pending` reason)."""

    planned: Planned
    check: AccessCheck | None
    pending: str | None = None


def check(
    settings: Settings,
    cipher: Cipher,
    url: str,
    ref: str,
    spec: CredentialSpec,
    current: StoredCredentials | None,
    *,
    comment: str,
    generated: bool = False,
) -> Checked:
    """The credentials `spec` makes of `current` (see `credentials.plan`), accepted by the
    host; `AccessRefused` (nothing saved) when it does not accept them or did not answer.
    `generated`: the spec's key is one Treecast just made (`one_key_for_all`)."""
    planned = creds.plan(settings, cipher, url, spec, current, comment=comment)
    if planned.generated or generated:
        return Checked(replace(planned, generated=True), None, GENERATED)
    if spec.clear:
        return Checked(planned, None, CLEARED)  # dropping secrets grants nothing
    verdict = host_verdict(settings, url, ref, planned.stored)
    if verdict.verdict == Verdict.GRANTED:
        return Checked(planned, verdict)
    raise AccessRefused(_refused(url, verdict, planned.stored.any))


def host_verdict(settings: Settings, url: str, ref: str, stored: StoredCredentials) -> AccessCheck:
    """What the git host says now of these credentials (none: anonymously), within
    `ACCESS_CHECK_SECONDS`."""
    try:
        credentials = decrypt(settings, replace(stored))
    except GitError as error:  # a GitHub App whose token GitHub would not mint
        return refusal(error)
    return probe(settings, url, ref, credentials, timeout=ACCESS_CHECK_SECONDS)


def _refused(url: str, verdict: AccessCheck, has_credentials: bool) -> str:
    reason = verdict.reason()
    if verdict.verdict == Verdict.UNKNOWN:
        return (
            f"could not check this app's access to {url}: the git host did not answer "
            f"({reason}); nothing was saved; try again"
        )
    if not has_credentials:
        return (
            f"{url} does not answer without credentials ({reason}): this app needs "
            "credentials of its own for it (a token, a deploy key or a GitHub App; "
            "docs/credentials.md); nothing was saved"
        )
    return f"the git host refused this app's credentials for {url} ({reason}); nothing was saved"


def one_key_for_all(spec: CredentialSpec, comment: str) -> tuple[CredentialSpec, bool]:
    """`spec` with a generated key made once, so every watch it is applied to gets the
    same key (one deploy key to add to the host); True when it made one."""
    if not spec.generate_ssh_key:
        return spec, False
    made = generate_deploy_key(comment)
    return replace(spec, generate_ssh_key=False, ssh_private_key=made.private_key), True
