"""/ready follows the database: a PostgreSQL of the test's own is stopped and started again
under a running API; /health (liveness) answers 200 all along."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.api_helpers import api_client, api_settings
from tests.support.faults_helpers import StoppablePostgres
from tests.support.temporal_env import start_local
from tests.support.waiting import until

pytestmark = [pytest.mark.postgres, pytest.mark.temporal, pytest.mark.timeout(180)]


async def test_ready_goes_not_ready_when_the_database_stops_and_back_when_it_returns(
    tmp_path: Path,
) -> None:
    temporal = await start_local()
    try:
        server = StoppablePostgres()
        try:
            server.create()
            settings = api_settings(
                tmp_path,
                TREECAST_DATABASE_URL=server.url,
                TEMPORAL_ADDRESS=temporal.client.service_client.config.target_host,
            )
            async with api_client(settings) as http:

                def ready_is(status: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        answer = await http.get("/ready")
                        seen.append(answer.json())
                        return answer.status_code == status

                    return check

                seen: list[dict[str, Any]] = []
                await until(ready_is(200))
                assert seen[-1] == {
                    "status": "ready",
                    "database": "ok",
                    "temporal": "ok",
                    "migrations": "ok",
                }

                server.stop()
                try:
                    await until(ready_is(503))
                    assert seen[-1]["status"] == "not ready"
                    assert seen[-1]["database"].startswith("unavailable")
                    assert seen[-1]["temporal"] == "ok"
                    health = await http.get("/health")
                    assert health.status_code == 200  # alive: nothing to restart
                finally:
                    server.start()

                await until(ready_is(200))
                assert seen[-1]["database"] == "ok"
        finally:
            server.remove()
    finally:
        await temporal.shutdown()
