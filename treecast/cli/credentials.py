"""The command line's credential options (`repo add`, `watch`, `repo set-credentials`): parsing them
into a `CredentialSpec`, and the host key confirmation of `--scan-host-keys`.

Host keys are never trusted on first use: `--scan-host-keys` prints the fingerprints the
server offers and stores nothing, unless `--accept-host-keys SHA256:...` names the ones
confirmed (with the host's operator, or the fingerprints GitHub and GitLab publish) or a
person at a terminal types `yes` after reading them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from treecast.service.credentials import CredentialSpec
from treecast.service.errors import UserError, shown
from treecast.service.results import HostKeyInfo

MAX_FILE_BYTES = 256 * 1024


def add_arguments(parser: argparse.ArgumentParser, *, rotating: bool) -> None:
    """The credential options of `repo add` and `watch` (and, with `rotating`, of
    set-credentials, whose `--token-env` is a new token, and `--clear`)."""
    if not rotating:
        parser.add_argument(
            "--token-env",
            metavar="VAR",
            help="name of an environment variable holding an access token",
        )
    group = parser.add_argument_group("credentials (docs/credentials.md)")
    if rotating:
        group.add_argument(
            "--token-env", metavar="VAR", help="environment variable holding a new access token"
        )
        group.add_argument("--clear", action="store_true", help="drop every credential")
    group.add_argument(
        "--ssh-key-file", metavar="PATH", help="deploy key: the private key file (ssh URLs)"
    )
    group.add_argument(
        "--generate-ssh-key",
        action="store_true",
        help="generate an Ed25519 deploy key and print its public key for the git host",
    )
    group.add_argument(
        "--known-hosts", metavar="FILE", help="the server's host keys (known_hosts format)"
    )
    group.add_argument(
        "--scan-host-keys",
        action="store_true",
        help="ask the server for its host keys and print their fingerprints; stores them "
        "only with --accept-host-keys (or a 'yes' at a terminal)",
    )
    group.add_argument(
        "--accept-host-keys",
        action="append",
        default=[],
        metavar="SHA256:...",
        help="the scanned fingerprints you confirmed (repeatable, or comma-separated)",
    )
    group.add_argument("--github-app-id", metavar="ID", help="GitHub App id (https URLs)")
    group.add_argument("--github-installation-id", metavar="ID", help="the app's installation id")
    group.add_argument("--github-app-key-file", metavar="PATH", help="the app's private key (.pem)")


def _read(option: str, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with Path(path).expanduser().open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise UserError(f"{option}: cannot read {shown(path)} ({error.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{option}: {shown(path)} is too large")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UserError(f"{option}: {shown(path)} is not a text file") from None


def spec_from_args(args: argparse.Namespace) -> CredentialSpec:
    """The `CredentialSpec` the options ask for (files read here; secrets stay in memory)."""
    token = None
    token_env = getattr(args, "token_env", None)
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise UserError(
                f"--token-env: the environment variable {shown(token_env)} is not set or empty"
            )
    accepted = [f.strip() for raw in args.accept_host_keys for f in raw.split(",") if f.strip()]
    return CredentialSpec(
        token=token,
        ssh_private_key=_read("--ssh-key-file", args.ssh_key_file),
        generate_ssh_key=args.generate_ssh_key,
        known_hosts=_read("--known-hosts", args.known_hosts),
        scan_host_keys=args.scan_host_keys,
        accept_host_keys=accepted,
        github_app_id=args.github_app_id,
        github_installation_id=args.github_installation_id,
        github_app_private_key=_read("--github-app-key-file", args.github_app_key_file),
        clear=getattr(args, "clear", False),
    )


def host_key_lines(keys: list[HostKeyInfo]) -> list[str]:
    return [f"  {key.key_type:<22} {key.fingerprint}" for key in keys]


def confirm_scanned(
    keys: list[HostKeyInfo],
    *,
    interactive: bool,
    ask: Callable[[str], str] = input,
) -> list[str] | None:
    """The fingerprints a person at a terminal confirmed (None: not confirmed, or no
    terminal to ask at)."""
    if not interactive:
        return None
    print("the server offers these host keys:", file=sys.stderr)
    for line in host_key_lines(keys):
        print(line, file=sys.stderr)
    print(
        "compare them with the fingerprints the git host publishes (GitHub and GitLab list "
        "theirs in their documentation) or its operator gives you.",
        file=sys.stderr,
    )
    try:
        answer = ask("pin these host keys? type yes: ")
    except EOFError:
        return None
    return [key.fingerprint for key in keys] if answer.strip().lower() == "yes" else None
