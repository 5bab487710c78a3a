"""Local clusters of real node processes, used through the DB-API driver like an application."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import shardb
from shardb.cluster import LocalCluster, stop_recorded, wait_ready

pytestmark = pytest.mark.timeout(300)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_dbapi_against_a_local_cluster_through_a_node_restart(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", 3, backend="paxos")
    try:
        cluster.start_all()
        await wait_ready(cluster)

        def session() -> None:
            with shardb.connect(cluster.address_list) as conn:
                cur = conn.cursor()
                cur.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
                cur.execute("ALTER TABLE people SPLIT AT VALUES (50)")
                cur.executemany(
                    "INSERT INTO people VALUES (?, ?, ?)",
                    [(i, f"p{i}", 20 + i % 50) for i in range(100)],
                )
                cur.execute("SELECT count(*), max(age) FROM people WHERE id >= ?", (25,))
                assert cur.fetchall() == [(75, 69)]
                assert [d[0] for d in cur.description] == ["count(*)", "max(age)"]
                cur.execute("SELECT backend FROM shardb_ranges WHERE table_name = 'people'")
                assert cur.fetchall() == [("paxos",), ("paxos",)]
                with pytest.raises(shardb.IntegrityError):
                    cur.execute("INSERT INTO people VALUES (1, 'dup', 1)")
                with pytest.raises(shardb.ProgrammingError):
                    cur.execute("SELECT * FROM missing")

        await trio.to_thread.run_sync(session)
        cluster.kill9(3)
        cluster.start(3)
        await wait_ready(cluster)

        def after_restart() -> None:
            with shardb.connect(cluster.address_list[2], consistency="stale") as conn:
                for _ in range(200):  # until node 3 caught up (stale = its own replica)
                    rows = conn.cursor().execute("SELECT count(*) FROM people").fetchall()
                    if rows == [(100,)]:
                        return
                    trio.from_thread.run(trio.sleep, 0.1)
                raise AssertionError(f"node 3 did not catch up: {rows}")

        await trio.to_thread.run_sync(after_restart)
    finally:
        cluster.stop()
    assert not any(cluster.running(n) for n in cluster.node_ids)


def test_up_and_down_from_separate_commands(tmp_path: Path) -> None:
    """``shardb down`` stops the nodes another process started, found via cluster.json."""
    root = tmp_path / "c"
    script = (
        "import sys, trio; from pathlib import Path; "
        "from shardb.cluster import LocalCluster, wait_ready; "
        "c = LocalCluster.create(Path(sys.argv[1]), 1, replication=1); c.start_all(); "
        "trio.run(lambda: wait_ready(c))"
    )
    subprocess.run([sys.executable, "-c", script, str(root)], check=True, timeout=120)
    recorded = LocalCluster.load(root).layout.pids
    assert len(recorded) == 1 and all(_pid_alive(p) for p in recorded.values())
    assert stop_recorded(root) == [1]
    assert not any(_pid_alive(p) for p in recorded.values())
    assert os.path.exists(root / "cluster.json")
