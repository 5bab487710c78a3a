"""shardb end to end: three real node processes on 127.0.0.1, SQL through their client ports.

The scenario of the database issue: a table pre-split into 8 ranges, 10,000 rows, point,
range and scatter queries compared with the same statements on a plain SQLite database, a
node killed with SIGKILL while the cluster keeps answering, and its restart catching up.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from support.procs import ProcCluster

from consensus.runtime.client import Client, ClientError, open_client

pytestmark = pytest.mark.timeout(600)

NODES = (1, 2, 3)
SCHEMA = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL)"
QUERIES: list[tuple[str, list[Any]]] = [
    ("SELECT * FROM items WHERE id = ?", [4321]),
    ("SELECT name, qty FROM items WHERE id IN (1, 1250, 5000, 9999, 123456) ORDER BY id", []),
    ("SELECT id, price FROM items WHERE id BETWEEN 2400 AND 2600 ORDER BY id", []),
    ("SELECT count(*), sum(qty), min(price), max(price) FROM items", []),
    (
        "SELECT qty % 10 AS b, count(*), avg(price) FROM items GROUP BY b ORDER BY b",
        [],
    ),
    ("SELECT id, name FROM items WHERE name LIKE 'item-99%' ORDER BY id", []),
    ("SELECT id FROM items ORDER BY price DESC, id LIMIT 7 OFFSET 3", []),
    ("SELECT count(*) FROM items WHERE qty > 50 AND id >= 7000", []),
]


async def sql(
    client: Client, node: int, text: str, params: list[Any] | None = None, **args: Any
) -> dict[str, Any]:
    # Generous deadlines: CI shares two cores between three nodes and the test.
    return await client.call(
        node,
        "sql",
        {"sql": text, "params": params or [], "timeout_ms": 60_000, **args},
        deadline=trio.current_time() + 70.0,
    )


async def sql_anywhere(
    client: Client, nodes: list[int], text: str, params: list[Any]
) -> dict[str, Any]:
    """Through the first gateway that answers (a client fails over to another node)."""
    last: ClientError | None = None
    for node in nodes:
        try:
            return await sql(client, node, text, params)
        except ClientError as exc:
            if exc.code not in ("unreachable", "unknown_outcome", "unavailable"):
                raise
            last = exc
    raise AssertionError(f"no gateway answered: {last}")


def same_rows(got: list[list[Any]], want: list[list[Any]]) -> bool:
    """Equal, except that REAL aggregates may differ in the last bits: each range sums its own
    rows and the gateway adds the partial sums, a different order of float additions than one
    SQLite summing every row (docs/sql.md, "Aggregates")."""
    if len(got) != len(want):
        return False
    for a_row, b_row in zip(got, want, strict=True):
        if len(a_row) != len(b_row):
            return False
        for a, b in zip(a_row, b_row, strict=True):
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=1e-12):
                    return False
            elif a != b or type(a) is not type(b):
                return False
    return True


def rows_of(reference: sqlite3.Connection, text: str, params: list[Any]) -> list[list[Any]]:
    return [list(r) for r in reference.execute(text, params)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ProcCluster]:
    procs = ProcCluster(tmp_path, NODES, kv=False)
    try:
        await procs.start_all()
        yield procs
    finally:
        procs.kill_all()


async def test_pre_split_table_survives_a_killed_node_and_matches_sqlite(
    cluster: ProcCluster,
) -> None:
    rng = random.Random(7)
    reference = sqlite3.connect(":memory:")
    reference.execute(SCHEMA)
    async with open_client(cluster.addresses, timeout_s=30.0) as client:
        await sql(client, 1, SCHEMA)
        splits = ", ".join(f"({k})" for k in range(1250, 10000, 1250))
        await sql(client, 2, f"ALTER TABLE items SPLIT AT VALUES {splits}")
        ranges = await sql(client, 3, "SHOW RANGES FROM TABLE items")
        assert len(ranges["rows"]) == 8

        rows = [
            (i, f"item-{i}", rng.randrange(100), round(rng.uniform(1, 500), 2))
            for i in range(1, 10001)
        ]
        for start in range(0, len(rows), 250):
            chunk = rows[start : start + 250]
            marks = ", ".join("(?, ?, ?, ?)" for _ in chunk)
            flat = [x for row in chunk for x in row]
            done = await sql(
                client, 1 + (start // 250) % 3, f"INSERT INTO items VALUES {marks}", flat
            )
            assert done["rowcount"] == len(chunk)
            reference.execute(f"INSERT INTO items VALUES {marks}", flat)

        async def differential(nodes: list[int]) -> None:
            for text, params in QUERIES:
                for node in nodes:
                    got = await sql(client, node, text, params)
                    want = rows_of(reference, text, params)
                    assert same_rows(got["rows"], want), (text, node, got["rows"], want)

        await differential(list(NODES))

        # Kill a node outright; the other two keep answering reads and writes.
        cluster.kill9(2)
        survivors = [1, 3]
        with trio.fail_after(60):
            for k in range(10001, 10301):
                await sql_anywhere(
                    client,
                    survivors,
                    "INSERT INTO items VALUES (?, ?, ?, ?)",
                    [k, f"item-{k}", k % 100, 1.5],
                )
                reference.execute(
                    "INSERT INTO items VALUES (?, ?, ?, ?)", [k, f"item-{k}", k % 100, 1.5]
                )
            await sql_anywhere(
                client, survivors, "UPDATE items SET qty = qty + 1 WHERE id < 3000", []
            )
            reference.execute("UPDATE items SET qty = qty + 1 WHERE id < 3000")
            await sql_anywhere(client, survivors, "DELETE FROM items WHERE id % 97 = 0", [])
            reference.execute("DELETE FROM items WHERE id % 97 = 0")
        await differential(survivors)

        # Restart it: it replays its log, catches up, and serves the same answers.
        cluster.start(2)
        await cluster.wait_serving(2)
        want = rows_of(reference, "SELECT count(*), sum(qty) FROM items", [])
        with trio.fail_after(120):
            while True:
                local = await sql(
                    client, 2, "SELECT count(*), sum(qty) FROM items", consistency="stale"
                )
                if local["rows"] == want:
                    break
                await trio.sleep(0.2)
        await differential([2])
