"""Response models made from the service's results: a model names the result it answers
and which of its fields go on the wire, in the wire's order; each field's type and
default come from the result's dataclass, so they are written in one place."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from typing import Any, get_type_hints

from pydantic import BaseModel, Field


def _hint(result: type, name: str) -> Any:
    """The type of one field of a result dataclass (its annotations are text); one field at
    a time, since others may name types imported only for type checking."""
    owner = next(c for c in result.__mro__ if name in vars(c).get("__annotations__", {}))
    namespace = vars(sys.modules[owner.__module__])

    def field() -> None: ...

    field.__annotations__ = {name: owner.__annotations__[name]}
    return get_type_hints(field, globalns=namespace)[name]


def _from_result(result: type, name: str, description: str | None) -> tuple[Any, Any]:
    """A field of a result as a pydantic annotation and default."""
    found = {f.name: f for f in dataclasses.fields(result)}[name]
    if found.default is not dataclasses.MISSING:
        default = Field(found.default, description=description)
    elif found.default_factory is not dataclasses.MISSING:
        default = Field(default_factory=found.default_factory, description=description)
    else:
        default = Field(description=description)
    return _hint(result, name), default


class Answer(BaseModel):
    """A response model made from a result dataclass (`result=`): its fields (`fields=`,
    in the wire's order; by default the result's own, less `exclude=`), described by
    `describe=`. A field the class body declares replaces the result's in place (a nested
    answer, an alias, a default of the wire's own); one the result lacks (the route adds
    it) follows the rest."""

    def __init_subclass__(
        cls,
        *,
        result: type | None = None,
        fields: Iterable[str] = (),
        exclude: Iterable[str] = (),
        describe: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        if result is not None:
            declared: dict[str, Any] = dict(vars(cls).get("__annotations__", {}))
            names = list(fields) or [
                f.name for f in dataclasses.fields(result) if f.name not in set(exclude)
            ]
            annotations: dict[str, Any] = {}
            for name in [*names, *declared]:
                if name in declared:
                    annotations[name] = declared[name]
                elif name not in annotations:
                    hint, default = _from_result(result, name, (describe or {}).get(name))
                    annotations[name] = hint
                    setattr(cls, name, default)
            cls.__annotations__ = annotations
        super().__init_subclass__(**kwargs)
