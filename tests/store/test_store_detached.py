"""The snapshot's reads as detached rows (store.access.watchers_of, Core with no ORM
loading) work in a process whose first database read they are: a worker's first sync."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    from sqlalchemy import insert
    from models.tables import Repository, Watch
    from treecast.db import prepare, session_scope
    from treecast.store.access import watchers_of

    url = sys.argv[1]
    prepare(url, upgrade=True)
    with session_scope(url) as session:
        connection = session.connection()
        connection.execute(
            insert(Repository.metadata.tables["repositories"]),
            {"id": "repo_1", "url": "https://example.com/a.git", "ref": "main",
             "poll_interval_seconds": 60},
        )
    with session_scope(url) as session:
        found = watchers_of(session, "repo_1")
        assert found is not None
        repository, watches = found
        print(repository.url, repository.ref, len(watches))
    """
)


def test_watchers_of_is_a_fresh_process_first_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'treecast.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["https://example.com/a.git", "main", "0"]
