"""The environment every git command runs in: least privilege, nothing inherited that could
change what git does.

No system or global config and no HOME (an operator's ~/.gitconfig could add hooks,
rewrite URLs or helpers; a ~/.netrc, credentials), only the transports Treecast uses
(`protocol.allow=never` otherwise: no `ext::` or `fd::`), no protocol chosen by a
URL (`GIT_PROTOCOL_FROM_USER=0`), no hooks, fsck on every fetch. Config that must
apply to one command only (a token header, the addresses a fetch may connect to)
is passed through `GIT_CONFIG_*` variables and lives as long as that command.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# The transports a watched repository may use; `file` is also refused at registration
# unless TREECAST_ALLOW_FILE_URLS is set.
ALLOWED_PROTOCOLS = ("https", "http", "ssh", "git", "file")

BASE_CONFIG: tuple[tuple[str, str], ...] = (
    ("protocol.allow", "never"),
    *((f"protocol.{name}.allow", "always") for name in ALLOWED_PROTOCOLS),
    ("core.hooksPath", os.devnull),
    # git refuses the malicious trees and objects it knows (e.g. `.git` path components)
    # before they reach the cache; old repositories' harmless zero-padded modes pass.
    ("transfer.fsckObjects", "true"),
    ("fetch.fsck.zeroPaddedFilemode", "ignore"),
    # fsck refuses a whole repository for one `.gitmodules` URL, path or name git's own
    # `submodule` command would misread. Treecast never runs that: each URL goes through
    # its URL policy and a refused one holds back that submodule alone (submodules.py).
    ("fetch.fsck.gitmodulesUrl", "ignore"),
    ("fetch.fsck.gitmodulesPath", "ignore"),
    ("fetch.fsck.gitmodulesName", "ignore"),
    ("credential.helper", ""),
    ("core.sshCommand", "ssh -o BatchMode=yes"),
)

# Variables an operator's environment must not hand to git (prompts, config injection,
# a different git directory or object store).
_DROPPED_PREFIXES = ("GIT_CONFIG", "GIT_DIR", "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY")
_DROPPED = {"GIT_ASKPASS", "SSH_ASKPASS", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_EXEC_PATH"}


# git's HOME and XDG_CONFIG_HOME. No file can exist below /dev/null, so every one git or
# its curl would read there (.gitconfig, git/attributes, .netrc) is absent (ENOTDIR, which
# git takes for a missing file without a warning) and nobody can plant one; and there is
# no folder to make, nor one that a killed process leaves behind. ssh ignores HOME: it
# takes the password database's home (gitcache/ssh.py says what it reads there).
NO_HOME = os.devnull


def git_env(config: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The environment of one git command, with `config` applied to it alone."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED and not key.startswith(_DROPPED_PREFIXES)
    }
    env.update(
        LC_ALL="C",  # classification reads English messages
        GIT_TERMINAL_PROMPT="0",  # never wait for a human
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        HOME=NO_HOME,
        XDG_CONFIG_HOME=NO_HOME,
        GIT_PROTOCOL_FROM_USER="0",
    )
    # Through config rather than GIT_SSH_COMMAND, so one command can pin its host.
    env.pop("GIT_SSH_COMMAND", None)
    env.pop("GIT_SSH", None)
    pairs = [*BASE_CONFIG, *config]
    env["GIT_CONFIG_COUNT"] = str(len(pairs))
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env
