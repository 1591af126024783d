"""docs/contracts.md's rooms table and the import-linter contracts in pyproject.toml say
the same: one "may use" contract per room (what its own code may import), and layers
in which every arrow of the table points down. `lint-imports` (in `make test`) checks
the code against the contracts; this checks the contracts against the table.

`python -m tests.contracts.test_room_contracts` prints the contracts the table asks for.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENTRY_SCRIPTS = {"starter", "worker"}  # modules, not packages: lint-imports cannot root them
BASE = "the base"


@dataclass(frozen=True)
class Room:
    modules: tuple[str, ...]
    may_use: frozenset[str]


def _module(token: str) -> str:
    """`treecast/store/` or `treecast.config` or `starter.py` as a dotted module name."""
    return token.removesuffix("/").removesuffix(".py").replace("/", ".")


def rooms(text: str | None = None) -> list[Room]:
    """The rows of the rooms table, the base expanded."""
    text = text or (ROOT / "docs" / "contracts.md").read_text()
    table = text.split("## The rooms", 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[tuple[str, ...], str, str]] = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        room, what, may_use = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append((tuple(_module(t) for t in re.findall(r"`([^`]+)`", room)), what, may_use))
    base = next(modules for modules, what, _ in rows if f"**{BASE}**" in what)
    found = []
    for modules, _, may_use in rows:
        used = {_module(t) for t in re.findall(r"`([^`]+)`", may_use)}
        if BASE in may_use:
            used |= set(base)
        found.append(Room(modules, frozenset(used)))
    return found


def expected_contracts(table: list[Room]) -> list[dict[str, Any]]:
    """One forbidden contract per room that lint-imports can check."""
    checked = [room for room in table if not set(room.modules) & ENTRY_SCRIPTS]
    universe = {module for room in checked for module in room.modules}
    contracts = []
    for room in checked:
        forbidden = sorted(universe - set(room.modules) - room.may_use)
        contracts.append(
            {
                "name": f"{room.modules[0]} may use only its column of docs/contracts.md",
                "type": "forbidden",
                "source_modules": list(room.modules),
                "forbidden_modules": forbidden,
                "allow_indirect_imports": True,
            }
        )
    return contracts


def configured() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_each_room_has_its_may_use_column_as_a_contract() -> None:
    by_name = {c["name"]: c for c in configured()}
    for contract in expected_contracts(rooms()):
        assert by_name.get(contract["name"]) == contract, (
            f"pyproject.toml's contract {contract['name']!r} differs from docs/contracts.md; "
            "print the expected ones with `python -m tests.contracts.test_room_contracts`"
        )
    generated = {c["name"] for c in expected_contracts(rooms())}
    stale = {
        name for name in by_name if name.endswith("docs/contracts.md") and name not in generated
    }
    assert stale == set(), "contracts for rooms the table no longer has"


def test_every_arrow_of_the_table_points_down_the_layers() -> None:
    [layered] = [c for c in configured() if c["type"] == "layers"]
    level: dict[str, tuple[int, bool]] = {}
    for index, layer in enumerate(layered["layers"]):
        independent = "|" in layer
        for module in re.split(r"\s*[|:]\s*", layer):
            level[module] = (index, independent)
    for room in rooms():
        for module in room.modules:
            if module in ENTRY_SCRIPTS:
                continue
            assert module in level, f"{module} is in no layer of pyproject.toml"
            for used in room.may_use:
                if used in ENTRY_SCRIPTS or used in room.modules:
                    continue
                (mine, _), (theirs, independent) = level[module], level[used]
                assert mine < theirs or (mine == theirs and not independent), (
                    f"{module} may use {used}, which is not below it"
                )


def test_the_libraries_know_no_temporal() -> None:
    [libraries] = [c for c in configured() if c.get("forbidden_modules") == ["temporalio"]]
    assert set(libraries["source_modules"]) >= {
        "treecast.gitcache",
        "treecast.webhooks",
        "treecast.delivery",
        "treecast.netpolicy",
    }


def test_the_doors_leave_blocking_work_to_the_service_layer() -> None:
    """Routes, pages and commands add no thread wrappers of their own: every service
    method that blocks does it off the event loop (treecast/service/runtime.py)."""
    wrappers = ("to_thread", "run_in_executor", "run_sync")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for door in ("treecast/api", "treecast/cli")
        for path in sorted((ROOT / door).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(wrapper in line for wrapper in wrappers)
    ]
    assert found == []


if __name__ == "__main__":
    for contract in expected_contracts(rooms()):
        print("\n[[tool.importlinter.contracts]]")
        for key, value in contract.items():
            shown = (
                "true"
                if value is True
                else "[\n" + "".join(f'    "{v}",\n' for v in value) + "]"
                if isinstance(value, list)
                else f'"{value}"'
            )
            print(f"{key} = {shown}")
