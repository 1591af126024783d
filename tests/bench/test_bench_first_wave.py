"""The first-wave benchmark (`python -m bench.first_wave`) at a tiny size, so it cannot rot."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
        ["--repos", "3", "--every", "1", "--timeout", "240", "--metrics"]
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

    floor = asyncio.run(temporal_floor.run_floor(3, tmp_path / "floor", every=1))
    assert floor.repos == 3 and floor.total_seconds > 0
    assert set(floor.cpu) == {"worker", "dev server", "bench"}
    assert temporal_floor.report(floor)[0].startswith("Temporal alone, 3 repositories")
    wave = first_wave.Wave(
        repos=3,
        total_seconds=2 * floor.total_seconds,
        cpu={"worker": 0.3, "git": 0.1, "dev server": 0.3, "bench": 0.0},
    )
    ratios = first_wave.floor_ratios(wave, floor)
    assert ratios[0].startswith("Treecast / Temporal alone: time 2.00x")
