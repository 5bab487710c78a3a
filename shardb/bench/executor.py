"""Executors: workload operations run against a real cluster through the async client.

Each client task of ``run_phase`` gets its own ``AsyncConnection`` (one TCP connection to its
preferred gateway, failing over to the others), and client ``c`` prefers gateway
``c mod nodes``: load is spread over every node, as a load balancer would, and a gateway that
dies takes only its share of clients through failover.

Errors become outcomes with ``outcome_of_error``: ``fail`` when the protocol says nothing
applied, ``unknown`` otherwise (timeouts, lost connections, ``unknown_outcome``), so a
register history stays honest for the linearizability checker. The async client already
retries ``not_leader``/``unavailable``/... on other gateways until the statement's deadline;
the gateway's own retries come back in the statement trace and are counted as retries.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final

from consensus.sim.kv import Op
from shardb.client.aio import AsyncConnection, open_connection
from shardb.client.errors import Error
from shardb.client.wire import Result
from shardb.workload.history import RegisterOp, RegisterTable
from shardb.workload.outcome import OpResult, Outcome, outcome_of_error
from shardb.workload.pacing import Clock
from shardb.workload.ycsb import KEY_COLUMN, OpKind, SqlStatement, UserTable, YcsbOp

from .timeline import OpTimeline

DEFAULT_TIMEOUT_S: Final = 5.0

Execute = Callable[[object, int], Awaitable[OpResult]]


class ConnectionPool:
    """One connection per client, client ``c`` preferring gateway ``c mod len(addresses)``."""

    def __init__(self, connections: Sequence[AsyncConnection]) -> None:
        if not connections:
            raise ValueError("need at least one connection")
        self._connections = tuple(connections)

    def __len__(self) -> int:
        return len(self._connections)

    def for_client(self, client: int) -> AsyncConnection:
        return self._connections[client % len(self._connections)]


@asynccontextmanager
async def open_pool(
    addresses: Sequence[str],
    clients: int,
    *,
    consistency: str = "linearizable",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[ConnectionPool]:
    if not addresses:
        raise ValueError("need at least one gateway address")
    async with AsyncExitStack() as stack:
        connections = []
        for client in range(max(1, clients)):
            start = client % len(addresses)
            rotated = [*addresses[start:], *addresses[:start]]
            conn = await stack.enter_async_context(
                open_connection(rotated, consistency=consistency, timeout=timeout_s, trace=True)
            )
            connections.append(conn)
        yield ConnectionPool(connections)


def _leader(result: Result) -> int:
    """The node that led the statement's (single) range, from its trace; 0 if unknown."""
    leaders = (result.trace or {}).get("leaders") or []
    return int(leaders[0]) if len(leaders) == 1 and isinstance(leaders[0], int) else 0


def _retries(result: Result) -> int:
    trace = result.trace or {}
    retries = trace.get("retries", 0)
    return retries if isinstance(retries, int) else 0


class RangeIndex:
    """Which range holds a key, from the split points of one table (``range_ids[i]`` holds
    keys in ``[starts[i], starts[i+1])``; ``starts[0]`` is None = unbounded)."""

    def __init__(self, starts: Sequence[str | None], range_ids: Sequence[int]) -> None:
        if len(starts) != len(range_ids) or not starts:
            raise ValueError("one start key per range, at least one range")
        self._bounds = [s for s in starts[1:] if s is not None]
        self._ids = tuple(range_ids)

    def range_of(self, key: str) -> int:
        return self._ids[bisect.bisect_right(self._bounds, key)]

    @property
    def range_ids(self) -> tuple[int, ...]:
        return self._ids


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBatch:
    """A multi-row INSERT of load-phase records that all fall in one range."""

    rows: tuple[YcsbOp, ...]

    @property
    def label(self) -> str:
        return "insert_batch"


def batch_insert_statement(table: UserTable, batch: LoadBatch) -> SqlStatement:
    columns = (KEY_COLUMN, *(name for name, _ in batch.rows[0].values))
    marks = "(" + ", ".join("?" * len(columns)) + ")"
    params: list[str] = []
    for row in batch.rows:
        params.append(row.key)
        params.extend(value for _, value in row.values)
    # ON CONFLICT DO NOTHING makes a retry of a batch whose outcome was unknown harmless: the
    # rows it already wrote are skipped, not reported as constraint violations.
    return SqlStatement(
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
        + ", ".join([marks] * len(batch.rows))
        + f" ON CONFLICT ({KEY_COLUMN}) DO NOTHING",
        tuple(params),
    )


class SqlExecutor:
    """Runs YCSB, register and kv operations (and load batches) over a connection pool,
    recording successful operations in an ``OpTimeline``."""

    def __init__(
        self,
        pool: ConnectionPool,
        clock: Clock,
        *,
        timeline: OpTimeline | None = None,
        start_ns: int = 0,
        ranges: RangeIndex | None = None,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self.timeline = timeline
        self.start_ns = start_ns
        """Timeline times are relative to this."""
        self._ranges = ranges

    def _note(
        self, outcome: Outcome, *, write: bool, key: str, results: Sequence[Result] = ()
    ) -> None:
        if self.timeline is None or outcome is Outcome.UNKNOWN:
            return
        range_id = self._ranges.range_of(key) if self._ranges is not None else 0
        self.timeline.record(
            self._clock.now_ns() - self.start_ns,
            ok=outcome is Outcome.OK,
            write=write,
            range_id=range_id,
            leader=_leader(results[-1]) if results else 0,
        )

    async def _run(
        self, client: int, statements: Sequence[SqlStatement]
    ) -> tuple[list[Result], OpResult]:
        conn = self._pool.for_client(client)
        results: list[Result] = []
        retries = 0
        for statement in statements:
            try:
                result = await conn.execute(statement.sql, statement.params)
            except Error as exc:
                outcome = outcome_of_error(exc.code)
                if results and outcome is Outcome.FAIL:
                    # A later statement of a multi-statement op failed after an earlier one
                    # (a write) applied: the op as a whole is not "nothing happened".
                    outcome = Outcome.UNKNOWN
                return results, OpResult(outcome=outcome, retries=retries, error=exc.code)
            retries += _retries(result)
            results.append(result)
        return results, OpResult(outcome=Outcome.OK, retries=retries)

    async def ycsb(self, table: UserTable, op: YcsbOp, client: int) -> OpResult:
        results, result = await self._run(client, table.statements(op))
        write = op.kind not in (OpKind.READ, OpKind.SCAN)
        self._note(result.outcome, write=write, key=op.key, results=results)
        return result

    async def load_batch(
        self, table: UserTable, batch: LoadBatch, client: int, *, attempts: int = 1
    ) -> OpResult:
        """Insert the batch, retrying up to ``attempts`` times in all while it fails or its
        outcome is unknown (the insert is idempotent); retries are counted in the result."""
        statement = batch_insert_statement(table, batch)
        retries = 0
        while True:
            results, result = await self._run(client, (statement,))
            if result.outcome is Outcome.OK or retries + 1 >= attempts:
                break
            retries += 1
        result = OpResult(
            outcome=result.outcome, retries=result.retries + retries, error=result.error
        )
        self._note(result.outcome, write=True, key=batch.rows[0].key, results=results)
        return result

    async def register(self, table: RegisterTable, op: RegisterOp, client: int) -> OpResult:
        results, result = await self._run(client, (table.statement(op),))
        if result.outcome is Outcome.OK:
            rows = results[0].rows
            answer = RegisterTable.result_of(op, rows, results[0].rowcount)
            result = OpResult(outcome=Outcome.OK, result=answer.result, retries=result.retries)
        self._note(result.outcome, write=op.op is not Op.GET, key=op.key, results=results)
        return result
