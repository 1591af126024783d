"""Custom search attributes of `SyncRepository`, defined once.

They make repositories findable and filterable in the Web UI and with
`temporal workflow list --query`, e.g. `TreecastBreakerState = "open"`.
A server must know them before a workflow upserts them: `worker.py --dev`
passes `dev_server_args()` to `temporal server start-dev`; a production
namespace needs `operator_create_command()` once.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributeUpdate,
)

REPOSITORY_ID = SearchAttributeKey.for_keyword("TreecastRepositoryId")
BREAKER_STATE = SearchAttributeKey.for_keyword("TreecastBreakerState")
LAST_COMMIT = SearchAttributeKey.for_keyword("TreecastLastCommit")
CONSECUTIVE_FAILURES = SearchAttributeKey.for_int("TreecastConsecutiveFailures")

ALL_KEYS: tuple[SearchAttributeKey[Any], ...] = (
    REPOSITORY_ID,
    BREAKER_STATE,
    LAST_COMMIT,
    CONSECUTIVE_FAILURES,
)


def _type_name(key: SearchAttributeKey[Any]) -> str:
    # The CLI spells indexed value types as in the API enum, e.g. INDEXED_VALUE_TYPE_KEYWORD.
    return key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_").title().replace("_", "")


def dev_server_args() -> list[str]:
    """`--search-attribute Name=Type` pairs for `temporal server start-dev`."""
    args: list[str] = []
    for key in ALL_KEYS:
        args += ["--search-attribute", f"{key.name}={_type_name(key)}"]
    return args


def operator_create_command() -> list[str]:
    """Arguments for `temporal operator search-attribute create` registering every key.

    The CLI pairs the n-th `--name` with the n-th `--type` and silently drops a
    name without its own type, so every name gets one.
    """
    command = ["operator", "search-attribute", "create"]
    for key in ALL_KEYS:
        command += ["--name", key.name, "--type", _type_name(key)]
    return command


def updates(
    repository_id: str, breaker_state: str, last_commit: str | None, consecutive_failures: int
) -> list[SearchAttributeUpdate[Any]]:
    """The upserts describing a repository's workflow now."""
    return [
        REPOSITORY_ID.value_set(repository_id),
        BREAKER_STATE.value_set(breaker_state),
        LAST_COMMIT.value_set(last_commit) if last_commit else LAST_COMMIT.value_unset(),
        CONSECUTIVE_FAILURES.value_set(consecutive_failures),
    ]
