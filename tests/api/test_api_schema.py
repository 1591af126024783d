"""Property-based: schemathesis generates requests from the OpenAPI document and calls the
app in-process. No answer may be a 5xx (503 is the documented "Temporal is down"), and
every answer must match its documented status and schema.

The schema is loaded by a fixture (`from_fixture`): one test item, each operation a subtest
with the cases an item of its own would run. Items of their own would have every test
process make the app and every operation's cases while collecting (~2 s each), for the
one process that runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi import checks as openapi_checks

from tests.support.api_helpers import ADMIN_TOKEN, api_settings
from tests.support.fuzzing import examples
from treecast.api.app import create_app
from treecast.service.core import TreecastService, run
from treecast.service.errors import Unreachable

CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


TOKENS: dict[str, str] = {"admin": ADMIN_TOKEN}


# What an app holds goes to reconcile as JSON Lines: text, as far as generating bodies goes.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@pytest.fixture
def api_schema(tmp_path: Path, request: pytest.FixtureRequest) -> BaseSchema:
    """The OpenAPI document of an app with one registered app and no Temporal."""
    # schemathesis 4.32's lazy schema reads and sets `_nodeid`, which pytest 9 nodes no
    # longer have (they keep `nodeid`): give it one to read.
    request.node._nodeid = request.node.nodeid
    settings = api_settings(tmp_path)
    service = TreecastService(settings)

    async def no_temporal() -> Any:
        raise Unreachable("Temporal is not reachable (schema test)")

    service.runtime.client = no_temporal  # type: ignore[method-assign]
    TOKENS["app"] = run(service.apps.add("schema", "https://example.com/hooks")).token
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, service))


schema = schemathesis.pytest.from_fixture("api_schema")


def _headers(path: str) -> dict[str, str]:
    token = TOKENS["admin"] if path.startswith("/admin/") else TOKENS["app"]
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=examples(12),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,  # no .hypothesis/ folder in the checkout
)
def test_no_server_errors_and_answers_match_the_schema(case: schemathesis.Case) -> None:
    response = case.call(headers=_headers(case.path))
    assert response.status_code < 500 or response.status_code == 503, (
        case.method,
        case.path,
        response.status_code,
        response.text[:300],
    )
    # Only conformance: the schema cannot say which URLs or secrets are acceptable, so
    # "schema-valid data refused" is expected (a 400/422 with the reason).
    case.validate_response(response, checks=CHECKS)
