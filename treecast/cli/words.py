"""How the command line names the inputs a service error is about: its flags."""

from __future__ import annotations

from treecast.service.errors import NotFound, UserError

FLAGS = {
    "accept_host_keys": "--accept-host-keys",
    "app": (
        "`starter.py repo add GIT_URL --app APP_ID ...`, `starter.py watch APP_ID REPO_ID ...`, "
        "docs/credentials.md"
    ),
    "app_id": "APP_ID",
    "base_url": "--url",
    "clear": "--clear",
    "client_auth_key": "--client-auth-key-env VAR",
    "database_url": "--database-url",
    "finish": "--finish",
    "generate_ssh_key": "--generate-ssh-key",
    "github_app_id": "--github-app-id",
    "github_app_private_key": "--github-app-key-file",
    "github_installation_id": "--github-installation-id",
    "host_keys": (
        "--known-hosts FILE or --scan-host-keys (then --accept-host-keys SHA256:... once confirmed)"
    ),
    "interval": "--interval",
    "known_hosts": "--known-hosts",
    "name": "--name",
    "paths": "--path",
    "ref": "--ref",
    "repository_id": "REPO_ID",
    "scan_host_keys": "--scan-host-keys",
    "scheme": "--scheme",
    "secret": "--secret",
    "ssh_private_key": "--ssh-key-file",
    "submodules": "--submodules",
    "token": "--token-env VAR",
    "tree_digest": "--digest",
    "url": "GIT_URL",
}

# The command that lists what an unknown id could have been.
LISTS = {"app_id": "app list", "repository_id": "repo list"}


def said(error: UserError) -> str:
    """A service error in the command line's words."""
    text = error.worded(FLAGS)
    if isinstance(error, NotFound) and error.field in LISTS:
        text += f"; see `starter.py {LISTS[error.field]}`"
    return text
