"""The gateway: one SQL statement in, the cluster's answer out. Any node runs one.

Pipeline (ARCHITECTURE.md, "SQL, server and client"): ``shardb.sql.analyze`` against the
catalog, ``route`` against the table's range map, one proposal (writes) or read (SELECT) per
target range sent to that range's group leader, then ``merge_select`` / ``merge_rowcounts``.
The catalog and range maps come from the meta group (``MetaState``), cached and refreshed when
a range answers ``stale_epoch`` or a table is missing.

Retries never apply a command twice. A range that refuses a sub-statement with
``stale_epoch`` applied nothing, so after refreshing the range map the gateway re-routes the
statement and sends it again only to the new ranges inside the refused range's bounds; ranges
that already applied are not touched again: after a split the new ranges lie inside the
refused one, and after a merge the new range is cut at the refused range's bounds (``clip``)
so only the refused keys are sent again. A write whose outcome is unknown (timeout, connection
lost mid-flight) is reported as such, never resent.

Writes that touch several ranges are atomic per range, not across ranges (there are no
cross-range transactions yet); a failure after some ranges applied is reported as ``partial``
with the ranges that did and did not apply.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final, TypeVar

import apsw
import structlog
import trio

from consensus.api import ConsensusError, Logger, ReadMode
from consensus.runtime.client import ClientError
from consensus.runtime.errors import ApplicationError, NodeError
from consensus.types import GroupId
from shardb.placement.descriptors import Key, RangeDescriptor, RangeMap, start_order
from shardb.placement.meta import (
    META_GROUP_ID,
    MergeRanges,
    MetaCommand,
    MetaErrorCode,
    MetaResult,
    MetaState,
    PkType,
    SetTableOption,
    SplitRange,
    encode_command,
)
from shardb.placement.meta import (
    CreateTable as MetaCreateTable,
)
from shardb.placement.meta import (
    DropTable as MetaDropTable,
)
from shardb.server.catalog import is_catalog_query, run_catalog_query
from shardb.server.groups import GroupAccess
from shardb.sql import (
    Catalog,
    CreateIndex,
    CreateTable,
    Delete,
    DropIndex,
    DropTable,
    Explain,
    IndexSchema,
    Insert,
    KeyType,
    ResultSet,
    Select,
    ShowRangeForRow,
    ShowRanges,
    SplitAt,
    SqlError,
    Statement,
    TableSchema,
    Update,
    analyze,
    explain,
    merge_rowcounts,
    merge_select,
    route,
    show_range_for_row,
    show_ranges,
    split_keys,
)
from shardb.sql.admin import range_filter
from shardb.sql.catalog import parse_create_index, parse_create_table
from shardb.sql.errors import (
    MergeError,
    NonDeterministic,
    ParameterError,
    SchemaError,
    SqlSyntaxError,
    UnknownIndex,
    UnknownTable,
    UnsupportedFeature,
    UnsupportedStatement,
)
from shardb.sql.route import Route, Target
from shardb.statemachine.commands import (
    ResultCode,
    decode_result,
    encode_ddl,
    encode_freeze,
    encode_merge,
    encode_query,
    encode_split,
    encode_write,
)
from shardb.statemachine.metamachine import (
    decode_meta_answer,
    decode_meta_result,
    encode_meta_query,
)

_T = TypeVar("_T")
_RETRY_CODES: Final = frozenset(
    {
        ResultCode.STALE_EPOCH.value,
        ResultCode.RANGE_FROZEN.value,
        ResultCode.RANGE_RETIRED.value,
    }
)
"""A range that refuses with these applied nothing: refresh the range map and re-route."""

INDEX_OPTION_PREFIX: Final = "index:"
VIRTUAL_TABLES: Final = ("shardb_nodes", "shardb_ranges", "shardb_groups")
DEFAULT_MAX_STALENESS_MS: Final = 5_000
ANALYZE_CACHE_SIZE: Final = 1024
"""Distinct statement texts whose analysis a gateway keeps (oldest evicted first)."""


class Consistency(enum.Enum):
    """Read consistency of a SELECT (docs/consistency.md)."""

    LINEARIZABLE = "linearizable"
    """ReadIndex at the leader (Raft thesis §6.4): reflects every write acknowledged before."""
    LEASE = "lease"
    """The leader's lease instead of a heartbeat round; linearizable while clocks drift less
    than the lease margin."""
    STALE = "stale"
    """Any replica's applied state: possibly behind, never ahead of, the leader."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    default_backend: str = "raft"
    replication_factor: int = 3
    max_route_attempts: int = 12
    """Re-routes after ``stale_epoch`` / missing table before giving up."""
    retry_pause_s: float = 0.02


@dataclass(slots=True, kw_only=True)
class Trace:
    route: str = ""
    ranges: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    leaders: list[int] = field(default_factory=list)
    retries: int = 0
    parse_ms: float = 0.0
    route_ms: float = 0.0
    consensus_ms: float = 0.0
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "ranges": self.ranges,
            "groups": self.groups,
            "leaders": self.leaders,
            "retries": self.retries,
            "parse_ms": round(self.parse_ms, 3),
            "route_ms": round(self.route_ms, 3),
            "consensus_ms": round(self.consensus_ms, 3),
            "total_ms": round(self.total_ms, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    kind: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    rowcount: int = -1

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
            "rowcount": self.rowcount,
        }


class _StaleRoute(Exception):
    """Targets refused with stale_epoch (nothing applied on them)."""

    def __init__(self, failed: list[Target], done: list[int]) -> None:
        super().__init__("stale route")
        self.failed = failed
        self.done = done


def sql_error(exc: SqlError, statement: str) -> ApplicationError:
    """A ``shardb.sql`` error as the protocol's error code (docs in sqlproto)."""
    match exc:
        case SqlSyntaxError():
            code = "syntax_error"
        case UnknownTable():
            code = "unknown_table"
        case UnknownIndex():
            code = "unknown_index"
        case ParameterError():
            code = "parameter_error"
        case NonDeterministic():
            code = "non_deterministic"
        case UnsupportedStatement() | UnsupportedFeature():
            code = "unsupported"
        case MergeError():
            code = "sql_error"
        case _:
            code = "sql_error"
    return ApplicationError(code, exc.message, statement=statement)


def _shard_error(result: dict[str, Any], statement: str) -> ApplicationError:
    code = result.get("code")
    message = str(result.get("error", "error"))
    match code:
        case ResultCode.CONSTRAINT.value:
            return ApplicationError("constraint", message, statement=statement)
        case ResultCode.SQLITE.value:
            lowered = message.lower()
            if "datatype mismatch" in lowered or "too big" in lowered:
                return ApplicationError("data_error", message, statement=statement)
            if lowered.startswith("no such table"):
                return ApplicationError("unknown_table", message, statement=statement)
            return ApplicationError("sql_error", message, statement=statement)
        case ResultCode.OUT_OF_RANGE.value:
            return ApplicationError("internal", f"routing bug: {message}", statement=statement)
        case ResultCode.NO_TABLE.value:
            return ApplicationError("unknown_table", message, statement=statement)
        case _:
            return ApplicationError("sql_error", message, statement=statement)


def _client_error(exc: ClientError | NodeError, what: str) -> ApplicationError:
    code = getattr(exc, "code", "internal")
    message = getattr(exc, "message", None) or str(exc)
    if code in ("timeout", "unknown_outcome", "node_closed"):
        return ApplicationError(code if code != "node_closed" else "unknown_outcome", message)
    if code in ("not_leader", "dropped", "unknown_group", "unreachable", "overloaded"):
        return ApplicationError("unavailable", f"{what}: {message}")
    return ApplicationError(code if isinstance(code, str) else "internal", message)


def table_schemas(meta: MetaState) -> Catalog:
    """The SQL catalog the meta group describes (tables and their secondary indexes)."""
    tables: list[TableSchema] = []
    indexes: list[IndexSchema] = []
    for info in meta.tables():
        schema = parse_create_table(info.schema_sql).schema
        tables.append(schema)
        for key, value in info.options:
            if key.startswith(INDEX_OPTION_PREFIX):
                parts = parse_create_index(value)
                indexes.append(parts.index)
    return Catalog(
        tables=tuple(sorted(tables, key=lambda t: t.name.lower())),
        indexes=tuple(sorted(indexes, key=lambda i: i.name.lower())),
    )


def initial_split_points(schema: TableSchema) -> tuple[Key, ...]:
    """Cut points for ``WITH (shards = N)``: N even slices of the key space. INTEGER keys are
    cut over the non-negative 32-bit range (sequential ids from 1 land in the first slice;
    use ``ALTER TABLE ... SPLIT AT`` or let automatic splits follow the data), TEXT keys over
    the printable first byte."""
    n = schema.shards
    if n <= 1:
        return ()
    if schema.key_type is KeyType.INTEGER:
        width = (1 << 31) // n
        return tuple(i * width for i in range(1, n))
    lo, hi = 0x21, 0x7E
    step = (hi - lo) / n
    points = sorted({chr(lo + round(i * step)) for i in range(1, n)})
    return tuple(points)


class Gateway:
    """Executes SQL for the clients connected to one node."""

    def __init__(
        self,
        access: GroupAccess,
        *,
        config: GatewayConfig | None = None,
        logger: Logger | None = None,
    ) -> None:
        self._access = access
        self._config = config or GatewayConfig()
        self._log: Logger = logger or structlog.get_logger("shardb.server.gateway")
        self._meta: MetaState | None = None
        self._meta_applied = -1
        self._catalog: Catalog = Catalog()
        self._refresh_lock = trio.Lock()
        self._analyzed: dict[str, tuple[Catalog, Statement]] = {}

    @property
    def access(self) -> GroupAccess:
        return self._access

    # ----------------------------------------------------------------- meta

    @property
    def meta(self) -> MetaState | None:
        return self._meta

    def offer_meta(self, applied: int, state: MetaState) -> None:
        """Adopt ``state`` if it is newer than the cached one (the service feeds the local
        replica's state here; refreshes read the leader's)."""
        if applied > self._meta_applied:
            self._meta, self._meta_applied = state, applied
            catalog = table_schemas(state)
            if catalog != self._catalog:  # keep the object (and the analysis cache) if equal
                self._catalog = catalog
            addresses = _client_addresses(state)
            if addresses:
                self._access.set_addresses(addresses)

    async def refresh_meta(self, *, timeout: float) -> MetaState:
        """Read the meta group through its leader (linearizable) and adopt the answer."""
        seen = self._meta_applied
        async with self._refresh_lock:
            if self._meta is not None and self._meta_applied > seen:
                return self._meta  # another task refreshed while we waited
            raw = await self._access.read(
                META_GROUP_ID, encode_meta_query(), mode=ReadMode.SAFE, timeout=timeout
            )
            applied, state = decode_meta_answer(raw)
            self.offer_meta(applied, state)
        if self._meta is None:  # pragma: no cover - offer_meta just set it
            raise ApplicationError("internal", "meta state missing after refresh")
        return self._meta

    async def _refresh_within(self, timeout: float) -> MetaState:
        return await self.refresh_meta(timeout=timeout)

    async def _ensure_meta(self, deadline: float) -> MetaState:
        if self._meta is not None:
            return self._meta
        return await self._call(self._refresh_within, deadline, "the meta group")

    async def propose_meta(self, command: MetaCommand, deadline: float) -> MetaResult:
        raw = await self._call(
            lambda t: self._access.propose(META_GROUP_ID, encode_command(command), timeout=t),
            deadline,
            "the meta group",
        )
        result = decode_meta_result(raw)
        # The meta group changed: our cache is behind it now.
        await self._call(self._refresh_within, deadline, "the meta group")
        return result

    async def describe(self, *, timeout: float) -> dict[str, Any]:
        """The cluster as the meta group sees it, with this gateway's leader beliefs."""
        meta = await self._call(
            self._refresh_within, trio.current_time() + timeout, "the meta group"
        )
        return {
            "nodes": [
                {"node_id": int(n.node_id), "address": n.address, "alive": n.alive}
                for n in meta.nodes()
            ],
            "ranges": [
                {
                    "range_id": r.range_id,
                    "table": r.table,
                    "start_key": r.start_key,
                    "end_key": r.end_key,
                    "group_id": int(r.group_id),
                    "replicas": [int(n) for n in r.replicas],
                    "backend": r.backend,
                    "epoch": r.epoch,
                    "leader": self._access.leader_of(r.group_id),
                }
                for r in meta.ranges()
            ],
            "tables": [
                {
                    "name": t.name,
                    "schema_sql": t.schema_sql,
                    "pk_column": t.pk_column,
                    "backend": t.backend,
                    "indexes": [v for k, v in t.options if k.startswith(INDEX_OPTION_PREFIX)],
                }
                for t in meta.tables()
            ],
            "meta_leader": self._access.leader_of(META_GROUP_ID),
        }

    # ----------------------------------------------------------------- entry point

    async def execute(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        consistency: Consistency = Consistency.LINEARIZABLE,
        timeout: float = 10.0,
        trace: Trace | None = None,
        max_staleness_ms: float | None = None,
    ) -> Answer:
        trace = trace if trace is not None else Trace()
        started = time.perf_counter()
        deadline = trio.current_time() + timeout
        try:
            meta = await self._ensure_meta(deadline)
            # --- shardb.server.catalog: SQLite catalog queries (SQLAlchemy's reflection).
            # Linearizable ones read the meta group first, to see every DDL acknowledged before.
            if is_catalog_query(sql):
                if consistency is Consistency.LINEARIZABLE:
                    await self._call(self._refresh_within, deadline, "the meta group")
                columns, rows = run_catalog_query(sql, params, self._catalog)
                return Answer(kind="select", columns=columns, rows=rows)
            # --- end shardb.server.catalog
            for attempt in range(self._config.max_route_attempts):
                t0 = time.perf_counter()
                try:
                    statement = self._analyze(sql)
                except UnknownTable as exc:
                    if exc.table.lower() in VIRTUAL_TABLES:
                        return await self._virtual(sql, params, deadline)
                    if attempt == 0:
                        # Perhaps created through another gateway a moment ago.
                        meta = await self._call(self._refresh_within, deadline, "the meta group")
                        continue
                    raise
                except (SchemaError, UnknownIndex):
                    if attempt == 0:
                        # "already exists" / "no such index": perhaps DDL through another
                        # gateway that our cached catalog has not seen yet.
                        meta = await self._call(self._refresh_within, deadline, "the meta group")
                        continue
                    raise
                trace.parse_ms += (time.perf_counter() - t0) * 1000
                try:
                    return await self._run(
                        statement, params, meta, consistency, deadline, trace, max_staleness_ms
                    )
                except _StaleRoute:
                    trace.retries += 1
                    await trio.sleep(min(self._config.retry_pause_s * 2**attempt, 0.5))
                    meta = await self._call(self._refresh_within, deadline, "the meta group")
            raise ApplicationError(
                "unavailable",
                f"the range map kept changing: gave up after "
                f"{self._config.max_route_attempts} attempts",
            )
        except SqlError as exc:
            raise sql_error(exc, sql) from exc
        finally:
            trace.total_ms = (time.perf_counter() - started) * 1000

    def _analyze(self, sql: str) -> Statement:
        """``analyze`` with a cache: clients send the same parameterized statements again
        and again, and parsing (sqlglot) was the gateway's largest CPU cost in the YCSB
        profile. A cached analysis is valid while the catalog object it was made against is
        the current one (DDL or a meta refresh that changed the catalog makes a new one);
        route() and the merge planner copy the tree before changing it."""
        catalog = self._catalog
        hit = self._analyzed.get(sql)
        if hit is not None and hit[0] is catalog:
            return hit[1]
        statement = analyze(sql, catalog)
        if len(self._analyzed) >= ANALYZE_CACHE_SIZE:
            self._analyzed.pop(next(iter(self._analyzed)))
        self._analyzed[sql] = (catalog, statement)
        return statement

    # ----------------------------------------------------------------- dispatch

    async def _run(
        self,
        statement: Statement,
        params: Sequence[Any],
        meta: MetaState,
        consistency: Consistency,
        deadline: float,
        trace: Trace,
        max_staleness_ms: float | None = None,
    ) -> Answer:
        match statement:
            case CreateTable():
                return await self._create_table(statement, deadline)
            case DropTable():
                return await self._drop_table(statement, meta, deadline)
            case CreateIndex() | DropIndex():
                return await self._index_ddl(statement, meta, deadline)
            case Select():
                return await self._select(
                    statement, params, meta, consistency, deadline, trace, max_staleness_ms
                )
            case Insert() | Update() | Delete():
                return await self._write(statement, params, meta, deadline, trace)
            case Explain():
                inner = statement.statement
                table = getattr(inner, "table", None)
                ranges = meta.range_map(table.name) if isinstance(table, TableSchema) else None
                result = explain(statement, params, ranges)
                return _answer("explain", result)
            case ShowRanges():
                result = show_ranges(statement, meta.range_map(statement.table.name))
                return self._with_leaders(result)
            case ShowRangeForRow():
                ranges = meta.range_map(statement.table.name)
                return self._with_leaders(show_range_for_row(statement, params, ranges))
            case SplitAt():
                return await self._split_at(statement, params, meta, deadline)
        raise ApplicationError("unsupported", f"{statement.kind.value} is not supported")

    def _with_leaders(self, result: ResultSet) -> Answer:
        group_at = result.columns.index("group_id")
        rows = tuple(
            (*row, self._access.leader_of(GroupId(int(row[group_at] or 0))) or None)
            for row in result.rows
        )
        return Answer(kind="admin", columns=(*result.columns, "leader"), rows=rows)

    # ----------------------------------------------------------------- reads

    async def _select(
        self,
        statement: Select,
        params: Sequence[Any],
        meta: MetaState,
        consistency: Consistency,
        deadline: float,
        trace: Trace,
        max_staleness_ms: float | None = None,
    ) -> Answer:
        t0 = time.perf_counter()
        planned = route(statement, params, meta.range_map(statement.table.name))
        trace.route_ms += (time.perf_counter() - t0) * 1000
        _note_route(trace, planned, self._access)
        t1 = time.perf_counter()
        results: list[list[tuple[Any, ...]]] = [[] for _ in planned.targets]
        stale: list[Target] = []

        async def one(i: int, target: Target) -> None:
            bounds = (target.range.start_key, target.range.end_key)
            query = encode_query(target.sql, target.params, target.range.epoch, bounds)
            raw = await self._read(
                target.range.group_id, query, consistency, deadline, max_staleness_ms
            )
            result = decode_result(raw)
            if result["ok"]:
                results[i] = [tuple(r) for r in result["rows"]]
            elif result.get("code") in _RETRY_CODES:
                stale.append(target)
            else:
                raise _shard_error(result, statement.sql)

        await _gather([partial(one, i, t) for i, t in enumerate(planned.targets)])
        trace.consensus_ms += (time.perf_counter() - t1) * 1000
        if stale:
            raise _StaleRoute(stale, [])
        if planned.select is None:  # pragma: no cover - route sets it for SELECT
            raise ApplicationError("internal", "select without a merge plan")
        merged = merge_select(planned.select, results)
        return _answer("select", merged)

    async def _read(
        self,
        group_id: GroupId,
        query: bytes,
        consistency: Consistency,
        deadline: float,
        max_staleness_ms: float | None = None,
    ) -> bytes:
        if consistency is Consistency.STALE:
            local = await self._access.read_local(
                group_id, query, max_staleness_ms=max_staleness_ms
            )
            if local is not None:
                result = decode_result(local)
                # A replica that has not applied the range's latest epoch answers
                # stale_epoch; fall through to the leader then.
                if result["ok"] or result.get("code") != ResultCode.STALE_EPOCH.value:
                    return local
        mode = ReadMode.LEASE if consistency is not Consistency.LINEARIZABLE else ReadMode.SAFE
        read: Callable[[float], Awaitable[bytes]] = partial(
            _read_with_timeout, self._access, group_id, query, mode
        )
        return await self._call(read, deadline, f"group {group_id}")

    # ----------------------------------------------------------------- writes

    async def _write(
        self,
        statement: Insert | Update | Delete,
        params: Sequence[Any],
        meta: MetaState,
        deadline: float,
        trace: Trace,
    ) -> Answer:
        t0 = time.perf_counter()
        planned = route(statement, params, meta.range_map(statement.table.name))
        trace.route_ms += (time.perf_counter() - t0) * 1000
        _note_route(trace, planned, self._access)
        targets = list(planned.targets)
        total = 0
        applied: list[int] = []
        for attempt in range(self._config.max_route_attempts):
            t1 = time.perf_counter()
            counts, stale, failure = await self._write_targets(statement, targets, deadline)
            trace.consensus_ms += (time.perf_counter() - t1) * 1000
            total += merge_rowcounts(counts.values())
            applied.extend(sorted(counts))
            if failure is not None:
                if applied:
                    raise ApplicationError(
                        "partial",
                        f"{failure.message} (the statement applied on ranges {applied} and "
                        f"not on the others: multi-range writes are atomic per range)",
                        statement=statement.sql,
                        applied_ranges=applied,
                        failed_ranges=sorted(t.range.range_id for t in targets),
                    ) from failure
                raise failure
            if not stale:
                return Answer(kind="write", rowcount=total)
            # Re-route only the refused ranges' part of the statement (module docstring).
            trace.retries += 1
            await trio.sleep(min(self._config.retry_pause_s * 2**attempt, 0.5))
            meta = await self._call(self._refresh_within, deadline, "the meta group")
            spans = [t.range for t in stale]
            clipped = clip(meta.range_map(statement.table.name), spans)
            again = route(statement, params, clipped)
            targets = [t for t in again.targets if any(_inside(t.range, s) for s in spans)]
        raise ApplicationError(
            "partial" if applied else "unavailable",
            "the range map kept changing while writing",
            applied_ranges=applied,
        )

    async def _write_targets(
        self, statement: Insert | Update | Delete, targets: list[Target], deadline: float
    ) -> tuple[dict[int, int], list[Target], ApplicationError | None]:
        counts: dict[int, int] = {}
        stale: list[Target] = []
        failures: list[ApplicationError] = []

        async def one(target: Target) -> None:
            command = encode_write(
                target.range.table,
                target.sql,
                target.params,
                target.range.epoch,
                (target.range.start_key, target.range.end_key),
            )
            try:
                raw = await self._call(
                    lambda t: self._access.propose(target.range.group_id, command, timeout=t),
                    deadline,
                    f"range {target.range.range_id}",
                )
            except ApplicationError as exc:
                failures.append(exc)
                return
            result = decode_result(raw)
            if result["ok"]:
                # Pieces of one range (``clip``) add up.
                rid = target.range.range_id
                counts[rid] = counts.get(rid, 0) + int(result.get("rowcount", 0))
            elif result.get("code") in _RETRY_CODES:
                stale.append(target)
            else:
                failures.append(_shard_error(result, statement.sql))

        await _gather([partial(one, t) for t in targets])
        return counts, stale, (failures[0] if failures else None)

    # ----------------------------------------------------------------- DDL

    async def _create_table(self, statement: CreateTable, deadline: float) -> Answer:
        if statement.exists:
            return Answer(kind="ddl")
        schema = statement.schema
        # The configured replication factor, never fewer: ranges are not up-replicated later
        # (no replica moves yet), so a table created while nodes are still joining would stay
        # under-replicated for good. The meta group refuses while too few nodes are live;
        # wait for them until the statement's deadline.
        command = MetaCreateTable(
            name=schema.name,
            schema_sql=statement.sql,
            pk_column=schema.primary_key,
            pk_type=PkType(schema.key_type.value),
            backend=(schema.backend.value if schema.backend else self._config.default_backend),
            split_points=initial_split_points(schema),
            replication_factor=self._config.replication_factor,
        )
        pause = 0.05
        while True:
            result = await self.propose_meta(command, deadline)
            if result.error is not MetaErrorCode.NOT_ENOUGH_NODES:
                break
            if trio.current_time() + pause >= deadline:
                raise ApplicationError("unavailable", result.message, statement=statement.sql)
            await trio.sleep(pause)
            pause = min(pause * 2, 0.5)
        if not result.ok:
            code = "sql_error" if result.error is None else result.error.value
            if code == "table_exists":
                if statement.if_not_exists:
                    return Answer(kind="ddl")
                raise ApplicationError(
                    "sql_error", f"table {schema.name} already exists", statement=statement.sql
                )
            raise ApplicationError("sql_error", result.message, statement=statement.sql)
        await self._wait_ready(result.ranges, deadline)
        return Answer(kind="ddl")

    async def _wait_ready(self, ranges: Sequence[RangeDescriptor], deadline: float) -> None:
        """Until every range's group answers a linearizable read (created and led)."""

        async def one(descriptor: RangeDescriptor) -> None:
            query = encode_query("SELECT 1 LIMIT 0", (), descriptor.epoch)
            pause = 0.01
            while True:
                try:
                    raw = await self._access.read(
                        descriptor.group_id,
                        query,
                        mode=ReadMode.SAFE,
                        timeout=max(0.05, deadline - trio.current_time()),
                    )
                    answer = decode_result(raw)
                    if answer["ok"]:
                        return
                    self._log.info("range_not_ready", range_id=descriptor.range_id, answer=answer)
                except (ClientError, NodeError, ConsensusError) as exc:
                    self._log.info("range_not_ready", range_id=descriptor.range_id, error=repr(exc))
                if trio.current_time() >= deadline:
                    raise ApplicationError(
                        "unavailable",
                        f"range {descriptor.range_id} (group {descriptor.group_id}) did not "
                        "become ready in time; it will keep starting in the background",
                    )
                await trio.sleep(pause)
                pause = min(pause * 2, 0.2)

        await _gather([partial(one, d) for d in ranges])

    async def _drop_table(self, statement: DropTable, meta: MetaState, deadline: float) -> Answer:
        if statement.table is None:
            return Answer(kind="ddl")
        name = statement.table.name
        ranges = meta.range_map(name).ranges
        result = await self.propose_meta(MetaDropTable(name=name), deadline)
        if not result.ok:
            raise ApplicationError("unknown_table", result.message, statement=statement.sql)
        await self._per_range_ddl(ranges, name, f"DROP TABLE IF EXISTS {_quote(name)}", deadline)
        return Answer(kind="ddl")

    async def _index_ddl(
        self, statement: CreateIndex | DropIndex, meta: MetaState, deadline: float
    ) -> Answer:
        if isinstance(statement, CreateIndex):
            if statement.exists:
                return Answer(kind="ddl")
            index = statement.index
            value: str | None = index.create_sql
        else:
            if statement.index is None:
                return Answer(kind="ddl")
            index = statement.index
            value = None
        ranges = meta.range_map(index.table).ranges
        # Shards first: a CREATE INDEX SQLite refuses must not enter the catalog.
        await self._per_range_ddl(ranges, index.table, statement.sql, deadline)
        command = SetTableOption(
            table=index.table, key=INDEX_OPTION_PREFIX + index.name, value=value
        )
        result = await self.propose_meta(command, deadline)
        if not result.ok:
            raise ApplicationError("sql_error", result.message, statement=statement.sql)
        return Answer(kind="ddl")

    async def _per_range_ddl(
        self, ranges: Sequence[RangeDescriptor], table: str, sql: str, deadline: float
    ) -> None:
        errors: list[ApplicationError] = []

        async def one(descriptor: RangeDescriptor) -> None:
            raw = await self._call(
                lambda t: self._access.propose(
                    descriptor.group_id, encode_ddl(table, sql), timeout=t
                ),
                deadline,
                f"range {descriptor.range_id}",
            )
            result = decode_result(raw)
            if not result["ok"] and result.get("code") != ResultCode.NO_TABLE.value:
                errors.append(_shard_error(result, sql))

        await _gather([partial(one, d) for d in ranges])
        if errors:
            raise errors[0]

    # ----------------------------------------------------------------- splits

    async def _split_at(
        self, statement: SplitAt, params: Sequence[Any], meta: MetaState, deadline: float
    ) -> Answer:
        keys = split_keys(statement, params, meta.range_map(statement.table.name))
        created: list[RangeDescriptor] = []
        if statement.unsplit:
            for key in keys:
                created.append(await self.unsplit(statement.table.name, key, deadline))
        else:
            # Right to left, so that every cut lands on a range whose group is long led (the
            # left part keeps the parent's group) instead of on the group the previous cut
            # just created, which would first have to elect a leader: the new groups elect
            # in parallel, waited for once at the end (255 cuts: ~30 s instead of ~4 min).
            latest: dict[int, RangeDescriptor] = {}
            for key in reversed(keys):
                for d in await self.split(statement.table.name, key, deadline, wait=False):
                    latest[d.range_id] = d
            created = sorted(latest.values(), key=lambda d: start_order(d.start_key))
            await self._wait_ready([d for d in created if d.start_key in keys], deadline)
        result = ResultSet(
            columns=("range_id", "start_key", "end_key", "group_id", "epoch"),
            rows=tuple(
                (d.range_id, d.start_key, d.end_key, int(d.group_id), d.epoch) for d in created
            ),
        )
        return _answer("admin", result)

    async def split(
        self, table: str, key: Key, deadline: float, *, wait: bool = True
    ) -> tuple[RangeDescriptor, ...]:
        """Cut ``table``'s range holding ``key`` at ``key``: the meta group first (it allocates
        the right range and group), then the parent group applies the split trigger (the
        right group appears on each replica exactly when its parent applies the split;
        ``shardb.statemachine``). If this gateway dies in between, the replicas' reconcilers
        propose the parent's split themselves (``shardb.server.service``). With ``wait``,
        returns once the right range serves; returns (left, right)."""
        meta = await self._call(self._refresh_within, deadline, "meta")
        parent = meta.range_map(table).lookup(key)
        result = await self.propose_meta(
            SplitRange(range_id=parent.range_id, epoch=parent.epoch, split_key=key), deadline
        )
        if not result.ok:
            raise ApplicationError("sql_error", f"split at {key!r} refused: {result.message}")
        left, right = result.ranges
        await self.apply_split(parent, left, right, deadline)
        if wait:
            await self._wait_ready((right,), deadline)
        return (left, right)

    async def apply_split(
        self,
        parent: RangeDescriptor,
        left: RangeDescriptor,
        right: RangeDescriptor,
        deadline: float,
    ) -> None:
        if right.start_key is None:  # pragma: no cover - SplitRange always sets it
            raise ApplicationError("internal", "split without a key")
        command = encode_split(right.start_key, parent.epoch, left.epoch, right)
        await self._propose_trigger(parent, command, "split", deadline)

    async def _propose_trigger(
        self, target: RangeDescriptor, command: bytes, what: str, deadline: float
    ) -> None:
        """Propose a split or merge trigger to ``target``'s group. ``stale_epoch`` means a
        reconciler (or an earlier attempt) already applied this very trigger: done."""
        raw = await self._call(
            lambda t: self._access.propose(target.group_id, command, timeout=t),
            deadline,
            f"range {target.range_id}",
        )
        result = decode_result(raw)
        if not result["ok"] and result.get("code") != ResultCode.STALE_EPOCH.value:
            raise ApplicationError("sql_error", f"{what} refused by the range: {result['error']}")

    # ----------------------------------------------------------------- merges

    async def unsplit(self, table: str, key: Key, deadline: float) -> RangeDescriptor:
        """Merge the range of ``table`` that starts at ``key`` into its left neighbour."""
        meta = await self._call(self._refresh_within, deadline, "meta")
        ranges = meta.range_map(table).ranges
        at = next((i for i, r in enumerate(ranges) if r.start_key == key), None)
        if at is None or at == 0:
            raise ApplicationError("sql_error", f"no range of {table} starts at {key!r}")
        left, right = ranges[at - 1], ranges[at]
        return await self.merge(left.range_id, left.epoch, right.range_id, right.epoch, deadline)

    async def merge(
        self, left_id: int, left_epoch: int, right_id: int, right_epoch: int, deadline: float
    ) -> RangeDescriptor:
        """Merge range ``right_id`` into its left neighbour ``left_id``.

        The meta group first (from then on gateways route the right range's keys to the left
        group), then ``apply_merge`` moves the rows. Replica sets must be equal (the placement
        driver moves replicas first). If this gateway dies after the meta change, the
        replicas' reconcilers finish the merge (``shardb.server.service``)."""
        meta = await self._call(self._refresh_within, deadline, "meta")
        left, right = meta.range(left_id), meta.range(right_id)
        if left is None or right is None:
            raise ApplicationError("sql_error", "merge refused: the ranges no longer exist")
        result = await self.propose_meta(
            MergeRanges(
                left_range_id=left_id,
                left_epoch=left_epoch,
                right_range_id=right_id,
                right_epoch=right_epoch,
            ),
            deadline,
        )
        if not result.ok:
            raise ApplicationError("sql_error", f"merge refused: {result.message}")
        merged = result.ranges[0]
        await self.apply_merge(left, right, merged, deadline)
        return merged

    async def apply_merge(
        self,
        left: RangeDescriptor,
        right: RangeDescriptor,
        merged: RangeDescriptor,
        deadline: float,
    ) -> None:
        """Freeze the right range (it refuses writes from then on, so nothing it accepts is
        lost), read all its rows linearizably, and have the left group apply the merge trigger
        carrying them: every replica of the left range ends with exactly those rows whatever
        it hosted before (``shardb.statemachine``). Each step is idempotent, so a reconciler
        may repeat the whole procedure."""
        freeze = await self._call(
            lambda t: self._access.propose(right.group_id, encode_freeze(right.epoch), timeout=t),
            deadline,
            f"range {right.range_id}",
        )
        frozen = decode_result(freeze)
        if frozen.get("code") == ResultCode.RANGE_RETIRED.value:
            return  # the merge trigger already applied (a repeated merge)
        if not frozen["ok"]:
            raise ApplicationError("sql_error", f"merge: freeze refused: {frozen.get('error')}")
        meta = await self._ensure_meta(deadline)
        info = meta.table(right.table)
        if info is None:
            raise ApplicationError("sql_error", f"merge: no table {right.table}")
        clause, bounds = range_filter(info.pk_column, right)
        pk = _quote(info.pk_column)
        query = encode_query(
            f"SELECT * FROM {_quote(right.table)}{clause} ORDER BY {pk}", bounds, right.epoch
        )
        raw = await self._call(
            partial(_read_with_timeout, self._access, right.group_id, query, ReadMode.SAFE),
            deadline,
            f"range {right.range_id}",
        )
        rows = decode_result(raw)
        if rows.get("code") == ResultCode.RANGE_RETIRED.value:
            return
        if not rows["ok"]:
            raise ApplicationError(
                "sql_error", f"merge: reading the right range: {rows.get('error')}"
            )
        command = encode_merge(left.epoch, merged.epoch, right, rows["columns"], rows["rows"])
        await self._propose_trigger(left, command, "merge", deadline)
        self._log.info(
            "ranges_merged", range_id=left.range_id, absorbed=right.range_id, rows=len(rows["rows"])
        )

    # ----------------------------------------------------------------- virtual tables

    async def _virtual(self, sql: str, params: Sequence[Any], deadline: float) -> Answer:
        """SELECT over shardb_nodes / shardb_ranges / shardb_groups: the cluster metadata is
        loaded into an in-memory SQLite database and the statement runs there unchanged, so
        any read-only SQL works on it."""
        meta = await self._call(self._refresh_within, deadline, "meta")
        db = apsw.Connection(":memory:")
        try:
            self._load_virtual(db, meta)
            cursor = db.cursor()
            try:
                columns: tuple[str, ...] = ()
                names: list[str] = []

                def trace(c: Any, _sql: str, _bindings: Any) -> bool:
                    if not c.is_readonly:
                        return False
                    # The description exists only while the statement runs (also for 0 rows).
                    names.extend(name for name, _ in c.get_description())
                    return True

                cursor.exec_trace = trace
                rows = [tuple(r) for r in cursor.execute(sql, tuple(params))]
                columns = tuple(names)
            except apsw.ExecTraceAbort as exc:
                raise ApplicationError(
                    "unsupported", "the shardb_* tables are read-only", statement=sql
                ) from exc
            except apsw.Error as exc:
                raise ApplicationError("sql_error", str(exc), statement=sql) from exc
        finally:
            db.close()
        return Answer(kind="select", columns=columns, rows=tuple(rows))

    def _load_virtual(self, db: apsw.Connection, meta: MetaState) -> None:
        db.execute(
            "CREATE TABLE shardb_nodes(node_id INTEGER PRIMARY KEY, address TEXT, alive INTEGER,"
            " replicas INTEGER, leaders INTEGER)"
        )
        db.execute(
            "CREATE TABLE shardb_ranges(range_id INTEGER PRIMARY KEY, table_name TEXT, "
            "start_key ANY, end_key ANY, group_id INTEGER, replicas TEXT, backend TEXT, "
            "epoch INTEGER, leader INTEGER)"
        )
        db.execute(
            "CREATE TABLE shardb_groups(group_id INTEGER PRIMARY KEY, kind TEXT, backend TEXT, "
            "voters TEXT, leader INTEGER, range_id INTEGER)"
        )
        leaders = {r.range_id: self._access.leader_of(r.group_id) for r in meta.ranges()}
        for node in meta.nodes():
            replica_count = sum(1 for r in meta.ranges() if node.node_id in r.replicas)
            led = sum(1 for leader in leaders.values() if leader == node.node_id)
            db.execute(
                "INSERT INTO shardb_nodes VALUES(?, ?, ?, ?, ?)",
                (int(node.node_id), node.address, int(node.alive), replica_count, led),
            )
        for r in meta.ranges():
            replicas = ",".join(str(int(n)) for n in r.replicas)
            db.execute(
                "INSERT INTO shardb_ranges VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.range_id,
                    r.table,
                    r.start_key,
                    r.end_key,
                    int(r.group_id),
                    replicas,
                    r.backend,
                    r.epoch,
                    leaders[r.range_id],
                ),
            )
            db.execute(
                "INSERT INTO shardb_groups VALUES(?, 'range', ?, ?, ?, ?)",
                (int(r.group_id), r.backend, replicas, leaders[r.range_id], r.range_id),
            )
        meta_leader = self._access.leader_of(META_GROUP_ID)
        db.execute(
            "INSERT INTO shardb_groups VALUES(?, 'meta', NULL, NULL, ?, NULL)",
            (int(META_GROUP_ID), meta_leader),
        )

    # ----------------------------------------------------------------- helpers

    async def _call(self, fn: Callable[[float], Awaitable[_T]], deadline: float, what: str) -> _T:
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            raise ApplicationError("timeout", f"deadline passed before reaching {what}")
        try:
            return await fn(remaining)
        except (ClientError, NodeError) as exc:
            raise _client_error(exc, what) from exc


async def _read_with_timeout(
    access: GroupAccess, group_id: GroupId, query: bytes, mode: ReadMode, timeout: float
) -> bytes:
    return await access.read(group_id, query, mode=mode, timeout=timeout)


def _answer(kind: str, result: ResultSet) -> Answer:
    return Answer(kind=kind, columns=tuple(result.columns), rows=tuple(result.rows))


def _note_route(trace: Trace, planned: Route, access: GroupAccess) -> None:
    trace.route = planned.kind.value
    trace.ranges = [t.range.range_id for t in planned.targets]
    trace.groups = [int(t.range.group_id) for t in planned.targets]
    trace.leaders = [access.leader_of(t.range.group_id) or 0 for t in planned.targets]


def clip(ranges: RangeMap, spans: Sequence[RangeDescriptor]) -> RangeMap:
    """``ranges`` with every range cut at the bounds of ``spans`` (same group and epoch).

    A re-routed write must reach only the keys of the ranges that refused it: after a merge,
    the new range covering a refused one also covers keys that already applied the statement
    (module docstring), so its part of the statement is confined to the refused span."""
    cuts: set[Key] = set()
    for span in spans:
        cuts.update(k for k in (span.start_key, span.end_key) if k is not None)
    pieces: list[RangeDescriptor] = []
    for r in ranges.ranges:
        inner = sorted(
            (k for k in cuts if r.contains(k) and k != r.start_key),
            key=lambda k: (isinstance(k, str), k),
        )
        bounds: list[Key | None] = [r.start_key, *inner, r.end_key]
        pieces.extend(replace(r, start_key=lo, end_key=hi) for lo, hi in itertools.pairwise(bounds))
    return RangeMap.build(ranges.table, pieces)


def _inside(inner: RangeDescriptor, outer: RangeDescriptor) -> bool:
    """``inner``'s keys overlap ``outer``'s (after splits: inner lies inside outer)."""
    below = (
        outer.end_key is not None
        and inner.start_key is not None
        and not inner.start_key < outer.end_key  # type: ignore[operator]  # one key type per table
    )
    above = (
        outer.start_key is not None
        and inner.end_key is not None
        and not outer.start_key < inner.end_key  # type: ignore[operator]  # one key type per table
    )
    return not (below or above)


def _client_addresses(meta: MetaState) -> dict[int, tuple[str, int]]:
    addresses: dict[int, tuple[str, int]] = {}
    for node in meta.nodes():
        host, sep, port = node.address.rpartition(":")
        if sep and port.isdigit():
            addresses[int(node.node_id)] = (host, int(port))
    return addresses


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _gather(calls: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run ``calls`` concurrently; the first exception any of them raised is re-raised as
    itself (not inside an ExceptionGroup) once all have finished."""
    if len(calls) == 1:
        await calls[0]()
        return
    errors: list[Exception] = []

    async def guarded(call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(guarded, call)
    if errors:
        raise errors[0]
