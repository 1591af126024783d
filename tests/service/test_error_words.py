"""Errors name the input they are about, and each front door words it its own way: the
service layer and the data layer speak no CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from treecast.api import admin_pages
from treecast.api import errors as api_errors
from treecast.cli import words
from treecast.errors import FIELDS, NotFound, UserError

ROOT = Path(__file__).resolve().parents[2]


def test_each_door_words_a_field_its_own_way() -> None:
    error = UserError("{name} must not be empty", "name")
    assert words.said(error) == "--name must not be empty"
    assert api_errors.said(error) == "app_name must not be empty"
    assert admin_pages._problem(error) == "Name must not be empty"
    assert str(error) == "name must not be empty"
    url = UserError("{url}: {reason}", "url", reason="no such host")
    assert (words.said(url), api_errors.said(url)) == ("GIT_URL: no such host", "url: no such host")


def test_text_from_outside_is_shown_as_it_is() -> None:
    # A value is never read for placeholders, and a message without a field is plain.
    error = UserError("{paths} {glob} is not a usable glob pattern", "paths", glob="'{name}'")
    assert words.said(error) == "--path '{name}' is not a usable glob pattern"
    assert words.said(UserError("cursor '{name}' is not one this API gave out")) == (
        "cursor '{name}' is not one this API gave out"
    )


def test_an_unknown_id_points_the_command_line_to_its_list() -> None:
    error = NotFound("no app app_x", "app_id")
    assert words.said(error) == "no app app_x; see `starter.py app list`"
    assert api_errors.said(error) == "no app app_x"


def test_every_field_has_a_flag() -> None:
    assert set(words.FLAGS) == FIELDS


def _raised_texts(path: Path) -> list[tuple[int, str]]:
    """The string pieces of the messages a file raises (`raise X("...")`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for argument in node.exc.args[:1]:
                for piece in ast.walk(argument):
                    if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                        found.append((node.lineno, piece.value))
    return found


@pytest.mark.parametrize("room", ["treecast/service", "treecast/store"])
def test_the_service_and_the_store_raise_no_cli_words(room: str) -> None:
    cli_words = ("--", "GIT_URL", "starter.py", "APP_ID", "REPO_ID")
    said = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for line, text in _raised_texts(path)
        if any(word in text for word in cli_words)
    ]
    assert said == []


def test_placeholders_name_known_fields() -> None:
    """A `{word}` in a message the service raises is a field (or a value it passes)."""
    import re

    for room in ("treecast/service", "treecast/store"):
        for path in sorted((ROOT / room).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if not name.endswith(("Error", "NotFound", "Conflict", "RefusedUrl", "Refused")):
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                values = {k.arg for k in node.keywords}
                for word in re.findall(r"\{(\w+)\}", first.value):
                    assert word in FIELDS or word in values, f"{path}:{node.lineno} {{{word}}}"


def test_the_admin_page_labels_only_known_fields() -> None:
    assert set(admin_pages.LABELS) <= FIELDS
