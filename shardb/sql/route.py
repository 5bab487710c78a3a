"""Find the ranges a statement touches and write the sub-statement each range runs.

Routing only narrows: the set of ranges chosen is always a superset of the ranges holding rows
the statement can touch, so a predicate the router does not understand costs a scatter, never a
wrong answer. From the WHERE clause it derives a set of primary-key intervals:

- ``pk = v``, ``pk IS v``, ``pk IN (v, ...)`` give points; ``pk > v``, ``>=``, ``<``, ``<=``,
  ``BETWEEN`` give intervals; AND intersects, OR unites; anything else (another column, NOT,
  a function of pk, COLLATE, a value of the wrong type) means "all keys".
- Values are literals or bound parameters, converted as SQLite would before comparing with the
  key column ("Datatypes In SQLite" 4.2: an INTEGER key compares with the numeric value of
  numeric text; a TEXT key compares with the text of a number). A REAL bound on an INTEGER key
  is rounded outward (``pk < 2.5`` is ``pk <= 2``).

The route kind follows: one point is ``point``, several (or none) ``multi_point``, intervals
``range``, all keys ``scatter``.

Every sub-statement is confined to its range: ``AND pk >= start AND pk < end`` is added to its
WHERE (bounds bound as parameters), so a range never reads or changes rows outside its bounds
even if its SQLite holds more (after a split, before cleanup). INSERT rows are grouped by the
range that holds their key; each range receives only its rows.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from shardb.placement.descriptors import Key, RangeDescriptor, RangeMap
from shardb.sql.analyze import (
    CreateIndex,
    CreateTable,
    Delete,
    DropIndex,
    DropTable,
    Insert,
    KeyTerm,
    ParamRef,
    Select,
    Statement,
    StatementKind,
    Update,
    check_time_params,
    try_literal,
)
from shardb.sql.catalog import KeyType, TableSchema
from shardb.sql.errors import ParameterError, RoutingError, SqlError
from shardb.sql.evaluate import strip_parens
from shardb.sql.lexer import PARAM_MARKER_PREFIX, generate, markers_to_placeholders
from shardb.sql.merge import SelectPlan, plan_select
from shardb.sql.values import INT64_MAX, INT64_MIN, Value, numeric_affinity


class RouteKind(enum.Enum):
    POINT = "point"
    MULTI_POINT = "multi_point"
    RANGE = "range"
    SCATTER = "scatter"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One sub-statement for one range: run ``sql`` with ``params`` on ``range``'s group."""

    range: RangeDescriptor
    sql: str
    params: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Interval:
    """Keys between ``low`` and ``high``; None is unbounded; ``*_open`` excludes the bound."""

    low: Key | None
    low_open: bool
    high: Key | None
    high_open: bool

    @property
    def is_point(self) -> bool:
        return (
            self.low is not None
            and self.low == self.high
            and not self.low_open
            and not self.high_open
        )


KeySet = tuple[Interval, ...] | None
"""Disjoint, sorted intervals of keys; None means every key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    kind: RouteKind
    table: str
    statement: StatementKind
    targets: tuple[Target, ...]
    keys: KeySet
    select: SelectPlan | None = None
    """How to merge the targets' rows (SELECT only)."""

    @property
    def is_write(self) -> bool:
        return self.statement is not StatementKind.SELECT


def check_params(statement: Statement, params: Sequence[object]) -> tuple[Value, ...]:
    """Validate the bound values: count and type (bool binds as int, as in sqlite3/apsw)."""
    if len(params) != statement.param_count:
        raise ParameterError(
            f"the statement has {statement.param_count} parameters, {len(params)} were given"
        )
    checked: list[Value] = []
    for value in params:
        if isinstance(value, bool):
            checked.append(int(value))
        elif value is None or isinstance(value, int | float | str | bytes):
            checked.append(value)
        else:
            raise ParameterError(f"unsupported parameter type {type(value).__name__}")
    return tuple(checked)


def route(statement: Statement, params: Sequence[object], ranges: RangeMap | None) -> Route:
    """The ranges ``statement`` touches and what each runs.

    ``ranges`` is the table's range map (for CREATE TABLE: the ranges just created for it);
    it may be None only for DDL that is a no-op (IF [NOT] EXISTS on a missing/existing name).
    """
    values = check_params(statement, params)
    check_time_params(statement, values)
    match statement:
        case Select() | Update() | Delete():
            return _route_filtered(statement, values, _need(ranges, statement.table))
        case Insert():
            return _route_insert(statement, values, _need(ranges, statement.table))
        case CreateTable():
            sql = None if statement.exists else statement.schema.create_sql
            return _route_ddl(statement.kind, statement.schema.name, sql, ranges)
        case DropTable():
            name = "" if statement.table is None else statement.table.name
            sql = None if statement.table is None else statement.sql
            return _route_ddl(statement.kind, name, sql, ranges)
        case CreateIndex():
            sql = None if statement.exists else statement.index.create_sql
            return _route_ddl(statement.kind, statement.table.name, sql, ranges)
        case DropIndex():
            name = "" if statement.table is None else statement.table.name
            sql = None if statement.index is None else statement.sql
            return _route_ddl(statement.kind, name, sql, ranges)
        case _:
            raise SqlError(f"{statement.kind.value} is answered by the gateway, not routed")


def _need(ranges: RangeMap | None, table: TableSchema) -> RangeMap:
    if ranges is None:
        raise SqlError(f"no range map for table {table.name}")
    if ranges.table.lower() != table.name.lower():
        raise SqlError(f"range map of {ranges.table} given for table {table.name}")
    return ranges


def _route_ddl(kind: StatementKind, table: str, sql: str | None, ranges: RangeMap | None) -> Route:
    # DDL runs on every range of the table: each range's SQLite holds its own copy of it.
    targets: tuple[Target, ...] = ()
    if sql is not None:
        if ranges is None:
            raise SqlError(f"no range map for table {table}")
        targets = tuple(Target(range=r, sql=sql, params=()) for r in ranges.ranges)
    return Route(kind=RouteKind.SCATTER, table=table, statement=kind, targets=targets, keys=None)


# --- key values ---------------------------------------------------------------------------------


def resolve_term(term: KeyTerm, params: Sequence[Value]) -> Value:
    return params[term.index] if isinstance(term, ParamRef) else term


def normalize_key(value: Value, key_type: KeyType) -> Key:
    """The key SQLite stores for ``value`` in a key column of ``key_type``; refuse others.

    An INTEGER PRIMARY KEY (the rowid) accepts integers, integral REALs and integer text; a TEXT
    key stores the text of an integer. Anything else would be refused by the shard or stored
    as a type the range bounds cannot order, so it is refused here with a clear message.
    """
    if key_type is KeyType.INTEGER:
        converted = numeric_affinity(value)
        if isinstance(converted, float) and converted.is_integer():
            converted = int(converted)
        if isinstance(converted, int) and INT64_MIN <= converted <= INT64_MAX:
            return converted
        raise RoutingError(f"primary key value {value!r} is not a 64-bit integer")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise RoutingError(f"primary key value {value!r} is not TEXT")


def _comparison(op: str, value: Value, key_type: KeyType) -> KeySet:
    """Keys ``k`` with ``k <op> value`` under SQLite's comparison rules; None if unsure."""
    if value is None:
        return ()  # a comparison with NULL is never true
    if key_type is KeyType.TEXT:
        if isinstance(value, int):
            value = str(value)  # TEXT affinity applies to the number (4.2)
        if not isinstance(value, str):
            return None
        return (_text_interval(op, value),)
    number = numeric_affinity(value)
    if isinstance(number, int):
        return (_int_interval(op, number, number),)
    if isinstance(number, float) and math.isfinite(number):
        if op == "=":
            return (_int_interval(op, int(number), int(number)),) if number.is_integer() else ()
        return (_int_interval(op, math.ceil(number), math.floor(number)),)
    return None  # text or blob never equals an integer; leave such predicates to the shard


def _int_interval(op: str, ceiling: int, floor: int) -> Interval:
    # For an integer value ceiling == floor; for a REAL one they round it up and down.
    match op:
        case "=":
            return Interval(floor, False, floor, False)
        case ">":
            return Interval(floor + 1, False, None, False)
        case ">=":
            return Interval(ceiling, False, None, False)
        case "<":
            return Interval(None, False, ceiling - 1, False)
        case _:
            return Interval(None, False, floor, False)


def _text_interval(op: str, value: str) -> Interval:
    match op:
        case "=":
            return Interval(value, False, value, False)
        case ">":
            return Interval(value, True, None, False)
        case ">=":
            return Interval(value, False, None, False)
        case "<":
            return Interval(None, False, value, True)
        case _:
            return Interval(None, False, value, False)


def _lower_before(a: Interval, b: Interval) -> bool:
    """a's lower bound is below b's (a starts first)."""
    if a.low is None or b.low is None:
        return a.low is None and b.low is not None
    if a.low != b.low:
        return a.low < b.low  # type: ignore[operator]  # one key type per table
    return not a.low_open and b.low_open


def _upper_after(a: Interval, b: Interval) -> bool:
    if a.high is None or b.high is None:
        return a.high is None and b.high is not None
    if a.high != b.high:
        return a.high > b.high  # type: ignore[operator]  # one key type per table
    return not a.high_open and b.high_open


def _is_empty(interval: Interval) -> bool:
    low, high = interval.low, interval.high
    if low is None or high is None:
        return False
    if low == high:
        return interval.low_open or interval.high_open
    return low > high  # type: ignore[operator]  # one key type per table


def _normalize(intervals: Sequence[Interval]) -> tuple[Interval, ...]:
    """Sort and merge overlapping intervals."""
    pending = [i for i in intervals if not _is_empty(i)]
    ordered: list[Interval] = []
    for interval in pending:  # insertion sort keeps this free of cross-type key functions
        index = len(ordered)
        while index > 0 and _lower_before(interval, ordered[index - 1]):
            index -= 1
        ordered.insert(index, interval)
    merged: list[Interval] = []
    for interval in ordered:
        if merged and _touches(merged[-1], interval):
            last = merged[-1]
            high = last if _upper_after(last, interval) else interval
            merged[-1] = Interval(last.low, last.low_open, high.high, high.high_open)
        else:
            merged.append(interval)
    return tuple(merged)


def _touches(first: Interval, second: Interval) -> bool:
    """``second`` (starting no earlier) overlaps or adjoins ``first``."""
    if first.high is None or second.low is None:
        return True
    if second.low == first.high:
        return not (first.high_open and second.low_open)
    return second.low < first.high  # type: ignore[operator]  # one key type per table


def intersect(a: KeySet, b: KeySet) -> KeySet:
    if a is None:
        return b
    if b is None:
        return a
    pieces: list[Interval] = []
    for x in a:
        for y in b:
            low = y if _lower_before(x, y) else x
            high = y if _upper_after(x, y) else x
            pieces.append(Interval(low.low, low.low_open, high.high, high.high_open))
    return _normalize(pieces)


def union(a: KeySet, b: KeySet) -> KeySet:
    if a is None or b is None:
        return None
    return _normalize((*a, *b))


_FLIPPED = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_OPERATORS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NullSafeEQ: "=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
}


class _KeyAnalyzer:
    def __init__(self, table: TableSchema, alias: str | None, params: Sequence[Value]) -> None:
        self._table = table
        self._names = {table.name.lower()} | ({alias.lower()} if alias else set())
        self._params = params

    def is_key(self, node: exp.Expr) -> bool:
        node = strip_parens(node)
        return (
            isinstance(node, exp.Column)
            and self._table.is_key(node.name)
            and (not node.table or node.table.lower() in self._names)
        )

    def value(self, node: exp.Expr) -> tuple[bool, Value]:
        ok, term = try_literal(node)
        return (True, resolve_term(term, self._params)) if ok else (False, None)

    def keys(self, node: exp.Expr | None) -> KeySet:
        if node is None:
            return None
        node = strip_parens(node)
        key_type = self._table.key_type
        match node:
            case exp.And():
                return intersect(self.keys(node.this), self.keys(node.expression))
            case exp.Or():
                return union(self.keys(node.this), self.keys(node.expression))
            case exp.In() if self.is_key(node.this) and not node.args.get("query"):
                found: KeySet = ()
                for item in node.expressions:
                    ok, value = self.value(item)
                    found = union(found, _comparison("=", value, key_type) if ok else None)
                return found
            case exp.Between() if self.is_key(node.this):
                low_ok, low = self.value(node.args["low"])
                high_ok, high = self.value(node.args["high"])
                return intersect(
                    _comparison(">=", low, key_type) if low_ok else None,
                    _comparison("<=", high, key_type) if high_ok else None,
                )
        op = _OPERATORS.get(type(node))
        if op is None:
            return None
        left, right = node.this, node.expression
        if self.is_key(right) and not self.is_key(left):
            left, right, op = right, left, _FLIPPED[op]
        if not self.is_key(left):
            return None
        ok, value = self.value(right)
        if not ok or (value is None and isinstance(node, exp.NullSafeEQ)):
            return None
        return _comparison(op, value, key_type)


def key_set(statement: Select | Update | Delete, params: Sequence[Value]) -> KeySet:
    tree = statement.expression
    if isinstance(tree, exp.Select):
        source = tree.args.get("from_") or tree.args.get("from")
        table_node = source.this if isinstance(source, exp.From) else None
    else:
        table_node = tree.this
    alias = table_node.alias if isinstance(table_node, exp.Table) else None
    where = tree.args.get("where")
    analyzer = _KeyAnalyzer(statement.table, alias or None, params)
    return analyzer.keys(None if where is None else where.this)


def ranges_for(keys: KeySet, ranges: RangeMap) -> tuple[RangeDescriptor, ...]:
    if keys is None:
        return ranges.ranges
    chosen: set[int] = set()
    for interval in keys:
        for descriptor in ranges.overlapping(
            interval.low, interval.high, high_inclusive=not interval.high_open
        ):
            chosen.add(descriptor.range_id)
    return tuple(r for r in ranges.ranges if r.range_id in chosen)


def kind_of(keys: KeySet) -> RouteKind:
    if keys is None:
        return RouteKind.SCATTER
    if all(interval.is_point for interval in keys):
        return RouteKind.POINT if len(keys) == 1 else RouteKind.MULTI_POINT
    return RouteKind.RANGE


def _marker(index: int) -> exp.Expr:
    return exp.Anonymous(this=f"{PARAM_MARKER_PREFIX}{index}")


def confine(
    tree: exp.Expr, table: TableSchema, descriptor: RangeDescriptor, first_marker: int
) -> list[Value]:
    """Add ``pk >= start AND pk < end`` to ``tree``'s WHERE, in place; return bound values.

    The bounds are markers numbered from ``first_marker`` (start first, then end).
    """
    conditions: list[exp.Expr] = []
    bound: list[Value] = []
    column = exp.column(table.primary_key, quoted=True)
    if descriptor.start_key is not None:
        conditions.append(exp.GTE(this=column.copy(), expression=_marker(first_marker)))
        bound.append(descriptor.start_key)
    if descriptor.end_key is not None:
        conditions.append(exp.LT(this=column.copy(), expression=_marker(first_marker + len(bound))))
        bound.append(descriptor.end_key)
    if conditions:
        where = tree.args.get("where")
        if where is not None:
            conditions.insert(0, exp.Paren(this=where.this))
        tree.set("where", exp.Where(this=exp.and_(*conditions, copy=False)))
    return bound


def render(tree: exp.Expr) -> tuple[str, tuple[int, ...]]:
    """SQLite text of ``tree`` with markers as ``?``, and the marker numbers in text order."""
    # The tree is the caller's private copy: skip the generator's defensive deep copy.
    return markers_to_placeholders(generate(tree))


def _route_filtered(
    statement: Select | Update | Delete, params: tuple[Value, ...], ranges: RangeMap
) -> Route:
    keys = key_set(statement, params)
    plan = plan_select(statement, params) if isinstance(statement, Select) else None
    base: exp.Expr = statement.expression if plan is None else plan.shard_query
    # Ranges differ only in which bounds they have (first and last ranges are open-ended),
    # so at most four texts are rendered however many ranges there are.
    rendered: dict[tuple[bool, bool], tuple[str, tuple[int, ...]]] = {}
    targets: list[Target] = []
    for descriptor in ranges_for(keys, ranges):
        shape = (descriptor.start_key is None, descriptor.end_key is None)
        if shape not in rendered:
            tree = base.copy()
            confine(tree, statement.table, descriptor, len(params))
            rendered[shape] = render(tree)
        sql, order = rendered[shape]
        values = (*params, *_bounds(descriptor))
        targets.append(Target(range=descriptor, sql=sql, params=tuple(values[i] for i in order)))
    return Route(
        kind=kind_of(keys),
        table=statement.table.name,
        statement=statement.kind,
        targets=tuple(targets),
        keys=keys,
        select=plan,
    )


def _bounds(descriptor: RangeDescriptor) -> tuple[Value, ...]:
    return tuple(k for k in (descriptor.start_key, descriptor.end_key) if k is not None)


def _route_insert(statement: Insert, params: tuple[Value, ...], ranges: RangeMap) -> Route:
    table = statement.table
    rows_by_range: dict[int, list[int]] = {}
    points: list[Interval] = []
    for row, term in enumerate(statement.keys):
        key = normalize_key(resolve_term(term, params), table.key_type)
        points.append(Interval(key, False, key, False))
        rows_by_range.setdefault(ranges.lookup(key).range_id, []).append(row)
    source = statement.expression.expression
    targets: list[Target] = []
    for descriptor in ranges.ranges:  # range order, so the plan is the same for any row order
        rows = rows_by_range.get(descriptor.range_id)
        if rows is None:
            continue
        tree = statement.expression.copy()
        tree.expression.set("expressions", [source.expressions[i].copy() for i in rows])
        sql, order = render(tree)
        targets.append(Target(range=descriptor, sql=sql, params=tuple(params[i] for i in order)))
    keys = _normalize(points)
    return Route(
        kind=kind_of(keys),
        table=table.name,
        statement=statement.kind,
        targets=tuple(targets),
        keys=keys,
    )


__all__ = [
    "Interval",
    "KeySet",
    "Route",
    "RouteKind",
    "Target",
    "check_params",
    "confine",
    "intersect",
    "key_set",
    "kind_of",
    "normalize_key",
    "ranges_for",
    "render",
    "route",
    "union",
]
