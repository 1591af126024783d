"""Property-based: schemathesis generates requests from the OpenAPI document and calls the
app in-process. No answer may be a 5xx (503 is the documented "Temporal is down"), and
every answer must match its documented status and schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as openapi_checks

from tests.support.api_helpers import ADMIN_TOKEN, api_settings
from treecast.api.app import create_app
from treecast.service.core import TreecastService, run
from treecast.service.errors import Unreachable

CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


TOKENS: dict[str, str] = {"admin": ADMIN_TOKEN}


def _app() -> Any:
    import tempfile

    settings = api_settings(Path(tempfile.mkdtemp(prefix="treecast-schema-")))
    service = TreecastService(settings)

    async def no_temporal() -> Any:
        raise Unreachable("Temporal is not reachable (schema test)")

    service.runtime.client = no_temporal  # type: ignore[method-assign]
    TOKENS["app"] = run(service.apps.add("schema", "https://example.com/hooks")).token
    return create_app(settings, service)


APP = _app()
# What an app holds goes to reconcile as JSON Lines: text, as far as generating bodies goes.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def _headers(path: str) -> dict[str, str]:
    token = TOKENS["admin"] if path.startswith("/admin/") else TOKENS["app"]
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=12,
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
