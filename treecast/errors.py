"""Errors a person sees, raised by the data layer and the service layer alike: one line,
no secrets, and the input they are about.

A message names the inputs it speaks of as placeholders (`"{name} must not be empty"`,
`field="name"`), and each front door words them its own way: the CLI as a flag
(`--name`), the HTTP API as its JSON field (`app_name`), the admin page as the form's
label, beside that field. `str(error)` uses the field names themselves. Text from
outside (a URL, a library's reason) goes in as a keyword value, never into the message
itself, so it is shown as it is: `UserError("{url}: {reason}", field="url", reason=err)`.
A message with neither a field nor values is plain text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# Every input a message may name; each front door has a word for each (tests check it).
FIELDS = frozenset(
    {
        "accept_host_keys",
        "app",  # an app to give credentials with (`UserError` when given without one)
        "app_id",
        "base_url",
        "clear",
        "client_auth_key",
        "database_url",
        "finish",
        "generate_ssh_key",
        "github_app_id",
        "github_app_private_key",
        "github_installation_id",
        "host_keys",  # host keys to pin, however the door takes them
        "interval",
        "known_hosts",
        "name",
        "paths",
        "ref",
        "repository_id",
        "scan_host_keys",
        "scheme",
        "secret",
        "ssh_private_key",
        "submodules",
        "token",
        "tree_digest",  # an app's tree digest, to reconcile against
        "url",
    }
)


class UserError(Exception):
    """Bad input or an unknown id: shown to the person as one line (CLI exit 2, HTTP 4xx;
    subclasses pick the status). `field` is the input it is about, if one."""

    def __init__(self, message: str, field: str | None = None, **values: object) -> None:
        self.template = message
        self.field = field
        self.values = {key: str(value) for key, value in values.items()}
        super().__init__(self.worded({}))

    def worded(self, words: Mapping[str, str]) -> str:
        """The message with each field named by `words` (a door's), or by its own name."""
        if self.field is None and not self.values:
            return self.template

        def word(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in self.values:
                return self.values[key]
            if key in FIELDS:
                return words.get(key, key)
            return match.group(0)

        return _PLACEHOLDER.sub(word, self.template)


class NotFound(UserError):
    """An id that is unknown, or that the caller may not see (HTTP 404)."""


class Conflict(UserError):
    """The request clashes with what exists (HTTP 409)."""


class RefusedUrl(UserError):
    """A URL refused by the checks in treecast.urls (HTTP 422)."""


class Unauthorized(Exception):
    """A missing, malformed or unknown credential (HTTP 401); never says which part was wrong."""


class NotConfigured(Exception):
    """A feature needs a setting that is not set (HTTP 503); the message names it."""


def shown(value: str, limit: int = 60) -> str:
    """`value` quoted for an error message, cut short: a huge argument must not make a huge line."""
    return repr(value if len(value) <= limit else value[:limit] + "…")
