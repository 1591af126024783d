"""The first-wave benchmark (`python -m bench.first_wave`) at a tiny size, so it cannot rot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench import first_wave
from tests.support.gitrepos import git


def test_the_made_repositories_are_valid_and_distinct(tmp_path: Path) -> None:
    made = first_wave.make_repositories(tmp_path, 3, files=2)
    assert [path.name for path in made] == ["r00000.git", "r00001.git", "r00002.git"]
    commits = set()
    for number, path in enumerate(made):
        git(path, "fsck", "--strict", "--no-progress")
        assert git(path, "ls-tree", "--name-only", "main").splitlines() == [
            "README.md",
            "file1.txt",
        ]
        assert git(path, "show", "main:README.md") == f"# repository {number}"
        commits.add(git(path, "rev-parse", "main"))
    assert len(commits) == 3


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_wave_of_three_repositories_is_registered_synced_and_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = first_wave.build_parser().parse_args(
        ["--repos", "3", "--every", "1", "--timeout", "240", "--metrics", "--anatomy"]
    )
    wave = asyncio.run(first_wave.run_wave(args, tmp_path))
    assert len(wave.registered_at) == 3
    assert set(wave.synced_at) == set(wave.registered_at) == set(wave.delivered_at)
    assert all(
        wave.registered_at[r] <= wave.synced_at[r] + 1 <= wave.delivered_at[r] + 1
        for r in wave.registered_at
    )
    assert wave.total_seconds == max(wave.delivered_at.values())
    assert set(wave.cpu) == {"worker", "git", "dev server", "bench"}
    lines = first_wave.report(wave)
    assert lines[0].startswith("3 repositories: every one delivered")
    assert any("activity ran: 6 times" in line for line in lines), lines
    assert len(wave.anatomy) == 3  # every repository's path read back from its histories
    assert "delivered      3" in capsys.readouterr().out  # the progress line


def test_the_timed_receiver_counts_concurrent_deliveries_of_many_repositories(
    tmp_path: Path,
) -> None:
    """Deliveries of different repositories reach the one receiver at once; each request's
    own record must be counted (a shared "latest request" lost two of 10,000)."""
    import hashlib
    import json
    import threading
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    from treecast.crypto import generate_webhook_secret

    secret = generate_webhook_secret()
    receiver = first_wave.TimedReceiver([secret], tmp_path / "mirror", files=1)
    signer = Webhook(secret)

    def deliver(number: int) -> None:
        data = f"file {number}\n"
        body = json.dumps(
            {
                "repository": {"repository_id": f"repo_{number}"},
                "file": {
                    "path": f"f{number}.txt",
                    "content": data,
                    "sha": hashlib.sha256(data.encode()).hexdigest(),
                    "size": len(data),
                },
            }
        ).encode()
        now = datetime.now(UTC)
        headers = {
            "webhook-id": f"msg_{number}",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(f"msg_{number}", now, body.decode()),
        }
        assert receiver.handle("create", body, headers)[0] == 200

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(40)]
    with receiver:  # stopped, its staging folder goes too
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(receiver.delivered_at) == sorted(f"repo_{n}" for n in range(40))


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_floor_runs_the_same_steps_with_temporal_alone(tmp_path: Path) -> None:
    """`bench.temporal_floor` (what `--floor` compares with) at a tiny size."""
    from bench import temporal_floor

    floor = asyncio.run(temporal_floor.run_floor(3, tmp_path / "floor", every=1, anatomy=True))
    assert floor.repos == 3 and floor.total_seconds > 0 and len(floor.anatomy) == 3
    assert set(floor.cpu) == {"worker", "dev server", "bench"}
    assert temporal_floor.report(floor)[0].startswith("Temporal alone, 3 repositories")
    wave = first_wave.Wave(
        repos=3,
        total_seconds=2 * floor.total_seconds,
        cpu={"worker": 0.3, "git": 0.1, "dev server": 0.3, "bench": 0.0},
    )
    ratios = first_wave.floor_ratios(wave, floor)
    assert ratios[0].startswith("Treecast / Temporal alone: time 2.00x")


def history(*rows: tuple[str, float, str | int | None]) -> list[Any]:
    """History events numbered from 1: (type, seconds, the activity type of a scheduled
    activity or the event number of an activity's start or completion)."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.history.v1 import HistoryEvent

    events = []
    for number, (kind, at, detail) in enumerate(rows, start=1):
        event = HistoryEvent(event_id=number, event_type=EventType.Value(f"EVENT_TYPE_{kind}"))
        event.event_time.FromMicroseconds(int(at * 1e6))
        if isinstance(detail, str):
            event.activity_task_scheduled_event_attributes.activity_type.name = detail
        elif kind == "ACTIVITY_TASK_STARTED":
            event.activity_task_started_event_attributes.scheduled_event_id = detail or 0
        elif kind == "ACTIVITY_TASK_COMPLETED":
            event.activity_task_completed_event_attributes.scheduled_event_id = detail or 0
        events.append(event)
    return events


def test_the_anatomy_splits_a_first_sync_into_its_waits() -> None:
    """`--anatomy` reads where a delivery waited from the two histories' event times."""
    from bench import wave_anatomy

    parent = history(
        ("WORKFLOW_EXECUTION_STARTED", 0.0, None),
        ("ACTIVITY_TASK_SCHEDULED", 1.0, "snapshot_repository"),
        ("ACTIVITY_TASK_STARTED", 2.0, 2),
        ("ACTIVITY_TASK_COMPLETED", 3.0, 2),
        ("WORKFLOW_TASK_SCHEDULED", 3.0, None),
        ("WORKFLOW_TASK_STARTED", 4.5, None),
        ("WORKFLOW_TASK_COMPLETED", 4.75, None),
        ("START_CHILD_WORKFLOW_EXECUTION_INITIATED", 4.75, None),
    )
    child = history(
        ("WORKFLOW_EXECUTION_STARTED", 5.0, None),
        ("WORKFLOW_TASK_SCHEDULED", 5.0, None),
        ("WORKFLOW_TASK_STARTED", 6.0, None),
        ("WORKFLOW_TASK_COMPLETED", 6.5, None),
        ("ACTIVITY_TASK_SCHEDULED", 6.5, "deliver_changes"),
        ("ACTIVITY_TASK_STARTED", 8.5, 5),
        ("ACTIVITY_TASK_COMPLETED", 9.0, 5),
    )
    steps = wave_anatomy.steps_of(parent, child)
    assert steps is not None
    assert [steps[name] for name in wave_anatomy.STEPS] == [1.5, 0.25, 0.25, 1.0, 0.5, 2.0, 0.5]
    assert steps[wave_anatomy.STICKY_TIMEOUTS] == 0.0
    assert wave_anatomy.steps_of(parent, child[:4]) is None  # no delivery yet
    lines = wave_anatomy.report([steps])
    assert lines[0].startswith("  anatomy of snapshot done -> delivery done (1 repositories")
    assert "delivery waited" in lines[6] and "p95   2.00s" in lines[6]
