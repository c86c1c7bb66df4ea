"""Judging a store file must not cost this process its SQLite locks.

POSIX drops every lock a process holds on a file when it closes *any* descriptor of that
file. Judging `mlflow.db` with a plain open()/close() while this process held SQLite
connections to it let another process's close delete the WAL this process was still
writing into: its commits vanished while the build reported success.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from luigiflow._store import sqlite_file

COUNT = (
    "import sqlite3, sys; "
    "print(sqlite3.connect(sys.argv[1]).execute('select count(*) from t').fetchone()[0])"
)
TOUCH = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    "c.execute('select * from t').fetchall(); c.close()"
)


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_judging_the_store_keeps_commits_of_open_connections(tmp_path):
    db = tmp_path / "mlflow.db"
    conn = sqlite3.connect(db)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table t(x)")
    conn.execute("insert into t values (1)")
    conn.commit()
    sqlite_file.judge(db)  # as a build does when it first writes, after its reads
    sqlite_file.judge(db)  # and again: nothing is ever closed under the connections
    subprocess.run([sys.executable, "-c", TOUCH, str(db)], check=True, timeout=60)
    conn.execute("insert into t values (2)")
    conn.commit()
    seen = subprocess.run(
        [sys.executable, "-c", COUNT, str(db)],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert seen.stdout.strip() == "2"  # the second commit reached the store
    conn.close()


def test_judge_still_refuses_an_empty_or_foreign_file(tmp_path):
    import pytest

    from luigiflow._errors import TrackingError

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(TrackingError, match="empty file"):
        sqlite_file.judge(empty)
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"x" * 200)
    with pytest.raises(TrackingError, match="not an SQLite database"):
        sqlite_file.judge(foreign)
