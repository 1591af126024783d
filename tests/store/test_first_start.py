"""Processes starting at once on a fresh data directory all start: the schema is created
by one of them at a time (`treecast.db.ensure_schema`'s migration lock), on SQLite and
on PostgreSQL.

Before the lock, `create_all` checked for each table and then created it, so the slower
of two processes failed with "table apps already exists": one `starter.py app list` in
six exited 1 in one of two runs of the hostile-input acceptance.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 6


def _create(url: str, barrier: multiprocessing.synchronize.Barrier, failures: object) -> None:
    from treecast.db import create_schema, make_engine

    engine = make_engine(url)
    barrier.wait(timeout=30)
    try:
        create_schema(engine)
    except Exception as error:  # what the process would have died of
        failures.put(f"{type(error).__name__}: {str(error).splitlines()[0]}")  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def start_together(url: str) -> list[str]:
    """`create_schema` in PROCESSES processes released at the same instant; their errors."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(PROCESSES)
    failures = context.Queue()
    workers = [
        context.Process(target=_create, args=(url, barrier, failures)) for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    found = []
    while not failures.empty():
        found.append(failures.get())
    found += [f"exit {w.exitcode}" for w in workers if w.exitcode != 0]
    return found


# Released by one barrier, six processes without the lock failed in every round here
# (SQLite: "table apps already exists"; PostgreSQL: a duplicate pg_type key).
def test_schema_creation_at_once_on_sqlite(tmp_path: Path) -> None:
    for round_ in range(8):
        url = f"sqlite:///{tmp_path / f'fresh-{round_}' / 'treecast.db'}"
        assert start_together(url) == [], f"round {round_}"


def test_schema_creation_at_once_on_postgres(postgres_url: str) -> None:
    from tests.docora.test_docora import fresh_database

    for round_ in range(5):
        assert start_together(fresh_database(postgres_url, "first")) == [], f"round {round_}"


@pytest.mark.slow  # eighteen interpreter starts, six at a time
def test_six_app_lists_at_once_in_a_fresh_data_dir(tmp_path: Path) -> None:
    """The acceptance's own check, six real `starter.py app list` at once, a few times
    (each round costs six interpreter starts; the rounds above run the race many times)."""
    for round_ in range(3):
        data = tmp_path / f"data-{round_}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TREECAST_")},
            "TREECAST_DATA_DIR": str(data),
            "TREECAST_DEV": "1",
        }
        started = [
            subprocess.Popen(
                [sys.executable, "starter.py", "app", "list"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(PROCESSES)
        ]
        for process in started:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, (round_, err.decode()[-500:])
            assert b"no apps yet" in out
