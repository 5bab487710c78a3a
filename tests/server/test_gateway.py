"""The gateway end to end inside one process: three real nodes over TCP, SQL in, rows out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from .harness import shard_cluster

pytestmark = pytest.mark.timeout(180)


async def test_create_insert_and_query_across_split_ranges(tmp_path: Path) -> None:
    """A table split in ranges answers point, range and scatter queries exactly like SQLite."""
    async with shard_cluster(tmp_path) as cluster:
        await cluster.sql("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
        split = await cluster.sql("ALTER TABLE kv SPLIT AT VALUES (200), (100)")
        assert split["kind"] == "admin"
        # The ranges the cuts produced, as they end up, in key order.
        assert [(row[1], row[2]) for row in split["rows"]] == [(None, 100), (100, 200), (200, None)]
        shown = (await cluster.sql("SHOW RANGES FROM TABLE kv"))["rows"]
        assert len(shown) == 3
        reference = sqlite3.connect(":memory:")
        reference.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
        rows = [(k, f"v{k}", k % 7) for k in range(0, 300, 3)]
        for start in range(0, len(rows), 25):
            chunk = rows[start : start + 25]
            marks = ", ".join("(?, ?, ?)" for _ in chunk)
            flat = [x for row in chunk for x in row]
            result = await cluster.sql(f"INSERT INTO kv VALUES {marks}", flat, node=2)
            assert result["rowcount"] == len(chunk)
            reference.execute(f"INSERT INTO kv VALUES {marks}", flat)
        queries = [
            ("SELECT * FROM kv WHERE k = ?", [150]),
            ("SELECT v FROM kv WHERE k IN (3, 150, 297) ORDER BY k", []),
            ("SELECT k FROM kv WHERE k >= 90 AND k < 210 ORDER BY k", []),
            ("SELECT count(*), sum(n), min(k), max(k) FROM kv", []),
            ("SELECT n, count(*) FROM kv GROUP BY n HAVING count(*) > 10 ORDER BY n", []),
            ("SELECT k FROM kv ORDER BY v DESC LIMIT 5 OFFSET 2", []),
        ]
        for text, params in queries:
            for node in (1, 2, 3):
                got = await cluster.sql(text, params, node=node)
                want = [list(r) for r in reference.execute(text, params)]
                assert got["rows"] == want, (text, node)
        ranges = await cluster.sql("SHOW RANGES FROM TABLE kv")
        assert len(ranges["rows"]) == 3
        changed = await cluster.sql("UPDATE kv SET n = n + 1 WHERE k >= 150")
        reference.execute("UPDATE kv SET n = n + 1 WHERE k >= 150")
        assert changed["rowcount"] == reference.total_changes - len(rows)
        got = await cluster.sql("SELECT sum(n) FROM kv", consistency="lease")
        assert got["rows"] == [list(r) for r in reference.execute("SELECT sum(n) FROM kv")]


async def test_bad_statements_get_clear_errors_and_change_nothing(tmp_path: Path) -> None:
    async with shard_cluster(tmp_path) as cluster:
        await cluster.sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        await cluster.sql("INSERT INTO t VALUES (1, 'a')")
        cases = {
            "SELECT * FROM t WHERE": "syntax_error",
            "SELEC * FROM t": "unsupported",
            "SELECT * FROM nope": "unknown_table",
            "INSERT INTO t VALUES (2, random())": "non_deterministic",
            "PRAGMA journal_mode": "unsupported",
            "INSERT INTO t VALUES (1, 'b')": "constraint",
            "INSERT INTO t VALUES (3, NULL)": "constraint",
            "CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT UNIQUE)": "sql_error",
        }
        for text, code in cases.items():
            error = await cluster.error(text)
            assert error.code == code, (text, error)
        assert (await cluster.sql("SELECT * FROM t"))["rows"] == [[1, "a"]]


@pytest.mark.parametrize("backend", ["raft", "paxos"])
async def test_splits_under_concurrent_writes_lose_and_duplicate_nothing(
    tmp_path: Path, backend: str
) -> None:
    """Rows written while their range splits land exactly once: the count and the sum of
    keys (a checksum) equal what the writers were told was acknowledged."""
    import trio

    async with shard_cluster(tmp_path, backend=backend) as cluster:
        await cluster.sql("CREATE TABLE w (k INTEGER PRIMARY KEY, v INTEGER)")
        acknowledged: list[int] = []

        async def writer(first: int) -> None:
            for k in range(first, 400, 4):
                result = await cluster.sql(
                    "INSERT INTO w VALUES (?, ?)", [k, k * 2], node=1 + k % 3
                )
                assert result["rowcount"] == 1
                acknowledged.append(k)

        async def splitter() -> None:
            for key in (50, 150, 250, 350):
                await trio.sleep(0.05)
                await cluster.sql(f"ALTER TABLE w SPLIT AT VALUES ({key})")

        async with trio.open_nursery() as nursery:
            for first in range(4):
                nursery.start_soon(writer, first)
            nursery.start_soon(splitter)
        ranges = await cluster.sql("SHOW RANGES FROM TABLE w")
        assert len(ranges["rows"]) == 5
        assert {r[5] for r in ranges["rows"]} == {backend}
        total = await cluster.sql("SELECT count(*), sum(k), sum(v) FROM w")
        assert total["rows"] == [[len(acknowledged), sum(acknowledged), 2 * sum(acknowledged)]]
        assert sorted(acknowledged) == list(range(400))
        for node in (1, 2, 3):  # every replica of every range agrees (stale = local replica)
            again = await cluster.sql("SELECT count(*) FROM w WHERE k >= 0", node=node)
            assert again["rows"] == [[400]]


async def test_metadata_tables_explain_indexes_and_drop(tmp_path: Path) -> None:
    async with shard_cluster(tmp_path) as cluster:
        await cluster.sql("CREATE TABLE m (name TEXT PRIMARY KEY, score INTEGER) WITH (shards = 4)")
        await cluster.sql("INSERT INTO m VALUES ('alice', 3), ('bob', 5), ('zed', 1)")
        nodes = await cluster.sql("SELECT node_id, alive FROM shardb_nodes ORDER BY node_id")
        assert nodes["rows"] == [[1, 1], [2, 1], [3, 1]]
        ranges = await cluster.sql(
            "SELECT count(*) FROM shardb_ranges WHERE table_name = ? AND leader IS NOT NULL",
            ["m"],
        )
        assert ranges["rows"] == [[4]]
        groups = await cluster.sql("SELECT kind, count(*) FROM shardb_groups GROUP BY kind")
        assert groups["rows"] == [["meta", 1], ["range", 4]]
        assert (await cluster.error("DELETE FROM shardb_nodes")).code == "unsupported"
        plan = await cluster.sql("EXPLAIN SELECT * FROM m WHERE name = 'bob'")
        assert plan["kind"] == "explain" and plan["rows"][0][3].startswith("point")
        await cluster.sql("CREATE INDEX m_score ON m(score)")
        meta = await cluster.client.call(2, "meta", {})
        assert meta["tables"][0]["indexes"] == ["CREATE INDEX m_score ON m(score)"]
        got = await cluster.sql("SELECT name FROM m WHERE score > 2 ORDER BY score", node=3)
        assert got["rows"] == [["alice"], ["bob"]]
        await cluster.sql("DROP INDEX m_score")
        await cluster.sql("DROP TABLE m", node=2)
        assert (await cluster.error("SELECT * FROM m", node=3)).code == "unknown_table"
        await cluster.sql("CREATE TABLE m (name TEXT PRIMARY KEY, score INTEGER)")
        assert (await cluster.sql("SELECT count(*) FROM m"))["rows"] == [[0]]


async def test_stale_and_lease_reads_answer_from_the_data(tmp_path: Path) -> None:
    async with shard_cluster(tmp_path) as cluster:
        await cluster.sql("CREATE TABLE s (k INTEGER PRIMARY KEY, v TEXT)")
        await cluster.sql("INSERT INTO s VALUES (1, 'x')")
        for consistency in ("linearizable", "lease"):
            got = await cluster.sql("SELECT v FROM s WHERE k = 1", consistency=consistency)
            assert got["rows"] == [["x"]]
        # A stale read is served by the gateway's own replica: eventually it has the row.
        import trio

        with trio.fail_after(20):
            while True:
                got = await cluster.sql("SELECT v FROM s WHERE k = 1", node=3, consistency="stale")
                if got["rows"] == [["x"]]:
                    break
                await trio.sleep(0.02)
        traced = await cluster.sql("SELECT v FROM s WHERE k = 1", trace=True)
        assert traced["trace"]["route"] == "point" and traced["trace"]["leaders"][0] in (1, 2, 3)


async def test_a_range_past_the_size_threshold_splits_by_itself(tmp_path: Path) -> None:
    import trio

    async with shard_cluster(tmp_path, split_rows=60) as cluster:
        await cluster.sql("CREATE TABLE a (k INTEGER PRIMARY KEY, v TEXT)")
        marks = ", ".join("(?, ?)" for _ in range(100))
        await cluster.sql(
            f"INSERT INTO a VALUES {marks}", [x for k in range(100) for x in (k, "v")]
        )
        with trio.fail_after(60):
            while len((await cluster.sql("SHOW RANGES FROM TABLE a"))["rows"]) < 2:
                await trio.sleep(0.1)
        assert (await cluster.sql("SELECT count(*), sum(k) FROM a"))["rows"] == [[100, 4950]]


async def test_cached_analysis_follows_catalog_changes(tmp_path: Path) -> None:
    """The same statement text is analyzed once per catalog; a table dropped and re-created
    with other columns is seen by the very next statement, not the cached analysis."""
    async with shard_cluster(tmp_path) as cluster:
        await cluster.sql("CREATE TABLE c (k INTEGER PRIMARY KEY, v TEXT)")
        text = "SELECT * FROM c WHERE k = ?"
        await cluster.sql("INSERT INTO c VALUES (1, 'one')")
        assert (await cluster.sql(text, [1]))["columns"] == ["k", "v"]
        await cluster.sql("DROP TABLE c")
        await cluster.sql("CREATE TABLE c (k INTEGER PRIMARY KEY, v TEXT, w INTEGER)")
        await cluster.sql("INSERT INTO c VALUES (1, 'one', 2)")
        assert (await cluster.sql(text, [1]))["rows"] == [[1, "one", 2]]


async def test_a_range_under_sustained_write_load_splits_by_itself(tmp_path: Path) -> None:
    """The load rule of the placement driver: a range whose leader commits more than
    ``split_writes_per_s`` for several checks in a row is cut at its median key."""
    import trio

    async with shard_cluster(tmp_path, split_writes_per_s=10.0) as cluster:
        await cluster.sql("CREATE TABLE hot (k INTEGER PRIMARY KEY, v INTEGER)")
        k = 0
        with trio.fail_after(90):
            while len((await cluster.sql("SHOW RANGES FROM TABLE hot"))["rows"]) < 2:
                for _ in range(20):
                    await cluster.sql("INSERT INTO hot VALUES (?, ?)", [k, k])
                    k += 1
        total = await cluster.sql("SELECT count(*), sum(k) FROM hot")
        assert total["rows"] == [[k, k * (k - 1) // 2]]
