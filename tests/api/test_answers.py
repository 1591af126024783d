"""`Answer`: a response model made from a result dataclass keeps the wire's order, takes
each field's type and default from the result, and lets the class body replace a field
in place or add one the route fills."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from treecast.api.answers import Answer


@dataclass
class Thing:
    thing_id: str
    size: int
    note: str | None = None
    tags: list[str] = field(default_factory=list)
    secret: str = ""


class Inner(Answer, result=Thing, fields=("thing_id",)):
    pass


class ThingOut(Answer, result=Thing, exclude=("secret",), describe={"size": "in bytes"}):
    note: str = "none"  # the wire's own default, in the result's place
    link: str | None = None  # the route fills it


class Reordered(Answer, result=Thing, fields=("size", "link", "thing_id")):
    link: str


def test_fields_types_defaults_and_order_come_from_the_result() -> None:
    fields = ThingOut.model_fields
    assert list(fields) == ["thing_id", "size", "note", "tags", "link"]
    assert fields["thing_id"].is_required() and fields["size"].annotation is int
    assert fields["size"].description == "in bytes"
    assert fields["note"].default == "none" and fields["note"].annotation is str
    shown = ThingOut.model_validate(Thing("t1", 3, "n", ["a"], "s"), from_attributes=True)
    assert (
        shown.model_dump_json() == '{"thing_id":"t1","size":3,"note":"n","tags":["a"],"link":null}'
    )
    assert ThingOut.model_validate({"thing_id": "t1", "size": 3}).model_dump() == {
        "thing_id": "t1",
        "size": 3,
        "note": "none",
        "tags": [],
        "link": None,
    }
    with pytest.raises(ValidationError):
        ThingOut.model_validate({"thing_id": "t1", "size": "big"})


def test_named_fields_set_the_order_and_a_declared_one_takes_its_place() -> None:
    assert list(Reordered.model_fields) == ["size", "link", "thing_id"]
    assert list(Inner.model_fields) == ["thing_id"]
    out = Reordered(size=1, link="l", thing_id="t")
    assert out.model_dump_json() == '{"size":1,"link":"l","thing_id":"t"}'
