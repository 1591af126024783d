"""The dataclasses that travel through Temporal keep evaluated annotations.

Temporal's converter calls `typing.get_type_hints` on each dataclass it decodes; with
postponed (string) annotations every call evaluates them again, which cost the worker
more than the conversions themselves in a first wave (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest

TRAVELLING = (
    "models.bulk",
    "models.changes",
    "models.checks",
    "models.contents",
    "models.delivery",
    "models.events",
    "models.git",
    "models.sync",
)


@pytest.mark.parametrize("name", TRAVELLING)
def test_dataclass_fields_are_types_not_strings(name: str) -> None:
    module = importlib.import_module(name)
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == name
    ]
    postponed = {
        f"{cls.__name__}.{field}"
        for cls in classes
        for field, annotation in vars(cls).get("__annotations__", {}).items()
        if isinstance(annotation, str)
    }
    assert not postponed, sorted(postponed)
