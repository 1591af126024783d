"""The first-wave benchmark (`python -m bench.first_wave`) at a tiny size, so it cannot rot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import first_wave
from tests.gitrepos import git


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
