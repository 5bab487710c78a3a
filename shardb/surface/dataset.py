"""The sample data ``shardb demo`` loads: a ``products`` table and an ``orders`` table.

Both are split into several ranges before the rows go in (``ALTER TABLE ... SPLIT AT``), so
``SHOW RANGES``, ``.ranges`` and ``EXPLAIN`` show point, range and scatter routes at once. The
rows come from a seeded ``random.Random``: every demo holds the same data, so a README or a
test can quote a result.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from shardb.client.wire import Value

SEED: Final = 20261122
BATCH_ROWS: Final = 400
"""Rows per INSERT: well under the gateway's 10,000 parameters per statement, and big enough
that loading takes a few round trips, not thousands."""

LOAD_CONCURRENCY: Final = 4
CATEGORIES: Final = ("books", "games", "garden", "kitchen", "music", "outdoor", "toys")
ADJECTIVES: Final = ("blue", "compact", "deluxe", "eco", "quiet", "rapid", "smart", "vintage")
NOUNS: Final = ("blender", "chair", "drone", "kettle", "lamp", "novel", "puzzle", "speaker")
CUSTOMERS: Final = ("ada", "barbara", "edsger", "grace", "leslie", "ken", "margaret", "niklaus")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoTable:
    name: str
    create_sql: str
    split_at: tuple[int, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[Value, ...], ...]

    @property
    def insert_prefix(self) -> str:
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES "

    def batches(self, size: int = BATCH_ROWS) -> list[tuple[str, list[Value]]]:
        """``(sql, params)`` INSERTs of at most ``size`` rows each, in key order."""
        one = "(" + ", ".join("?" for _ in self.columns) + ")"
        out: list[tuple[str, list[Value]]] = []
        for start in range(0, len(self.rows), size):
            chunk = self.rows[start : start + size]
            params = [value for row in chunk for value in row]
            out.append((self.insert_prefix + ", ".join(one for _ in chunk), params))
        return out


PRODUCTS: Final = 1000
ORDERS: Final = 2000


def demo_tables(seed: int = SEED) -> tuple[DemoTable, ...]:
    """The demo tables in load order, rows included."""
    rng = random.Random(seed)
    products = tuple(
        (
            i,
            f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {i}",
            rng.choice(CATEGORIES),
            round(rng.uniform(2.0, 250.0), 2),
            rng.randrange(0, 500),
        )
        for i in range(1, PRODUCTS + 1)
    )
    first_day = datetime.date(2026, 1, 1)
    orders = tuple(
        (
            i,
            rng.randrange(1, PRODUCTS + 1),
            rng.choice(CUSTOMERS),
            rng.randrange(1, 6),
            (first_day + datetime.timedelta(days=rng.randrange(0, 320))).isoformat(),
        )
        for i in range(1, ORDERS + 1)
    )
    return (
        DemoTable(
            name="products",
            create_sql=(
                "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "category TEXT NOT NULL, price REAL NOT NULL, stock INTEGER NOT NULL)"
            ),
            split_at=(250, 500, 750),
            columns=("id", "name", "category", "price", "stock"),
            rows=products,
        ),
        DemoTable(
            name="orders",
            create_sql=(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL, "
                "customer TEXT NOT NULL, quantity INTEGER NOT NULL, placed_at TEXT NOT NULL)"
            ),
            split_at=(700, 1400),
            columns=("id", "product_id", "customer", "quantity", "placed_at"),
            rows=orders,
        ),
    )


Execute = Callable[[str, Sequence[Value]], Awaitable[object]]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _insert(
    execute: Execute, limiter: trio.CapacityLimiter, sql: str, params: list[Value]
) -> None:
    async with limiter:
        await execute(sql, params)


async def load_demo_data(
    execute: Execute,
    *,
    progress: Callable[[str], None] | None = None,
    seed: int = SEED,
) -> tuple[DemoTable, ...]:
    """Create, split and fill the demo tables through ``execute(sql, params)``."""
    tables = demo_tables(seed)
    for table in tables:
        await execute(table.create_sql, ())
        if table.split_at:
            points = ", ".join(f"({key})" for key in table.split_at)
            await execute(f"ALTER TABLE {table.name} SPLIT AT VALUES {points}", ())
        # Batches in parallel: each waits mostly on consensus round trips, which pipeline.
        limiter = trio.CapacityLimiter(LOAD_CONCURRENCY)

        try:
            async with trio.open_nursery() as nursery:
                for sql, params in table.batches():
                    nursery.start_soon(_insert, execute, limiter, sql, params)
        except BaseExceptionGroup as group:
            # The caller wants the client's error (exit code, message), not a group of them.
            raise _first_leaf(group) from group
        if progress is not None:
            progress(
                f"loaded {len(table.rows)} rows into {table.name} "
                f"({len(table.split_at) + 1} ranges)"
            )
    return tables
