"""Arrows between rooms that must not exist (docs/contracts.md), read from the source.

The libraries know no Temporal (the activities map their errors and pass their
heartbeats), activities never import workflows, and the two workflows that signal each
other do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def files_of(room: str) -> list[Path]:
    path = ROOT / room
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def offenders(rooms: list[str], forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for room in rooms
        for path in files_of(room)
        for module in sorted(imported_modules(path))
        if module == forbidden or module.startswith(forbidden + ".")
    ]


@pytest.mark.parametrize(
    ("rooms", "forbidden"),
    [
        (
            [
                "treecast/gitcache",
                "treecast/webhooks",
                "treecast/delivery",
                "treecast/netpolicy.py",
            ],
            "temporalio",
        ),
        (["activities"], "workflows"),
        (["workflows/deliver_files.py"], "workflows.sync_repository"),
    ],
)
def test_no_arrow_the_contracts_forbid(rooms: list[str], forbidden: str) -> None:
    assert offenders(rooms, forbidden) == []
