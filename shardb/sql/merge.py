"""Split a SELECT into per-range queries and merge their results into SQLite's answer.

Three shapes, chosen when the query is planned (``plan_select``):

- ``CONCAT``: no ORDER BY, no aggregate. Each range returns its rows; the gateway concatenates
  them in range order and applies OFFSET/LIMIT. Each range runs ``LIMIT offset+limit`` (no
  OFFSET): the first ``offset+limit`` rows of the union are among those.
- ``SORT``: ORDER BY without aggregates. Each range runs the ORDER BY with ``LIMIT
  offset+limit``; sort keys that are not result columns are appended as hidden columns; the
  gateway heap-merges the sorted streams with SQLite's ordering (type classes, collations,
  NULLS FIRST/LAST), skips OFFSET, stops at LIMIT, and drops the hidden columns.
- ``AGGREGATE``: GROUP BY or an aggregate. Each range returns, per group, its group keys and
  partial aggregates (AVG becomes TOTAL and COUNT); the gateway combines partials per group
  (COUNT and TOTAL add, SUM adds with SQLite's NULL/REAL/overflow rules, MIN/MAX compare with
  the argument's collation), then computes result columns, filters by HAVING, sorts by ORDER BY
  and applies OFFSET/LIMIT, in SQLite's order of evaluation.

An aggregate without GROUP BY always yields one row, even from no rows (COUNT 0, SUM NULL),
as SQLite does.
"""

from __future__ import annotations

import enum
import functools
import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlglot import exp

from shardb.sql.analyze import ParamRef, Select, aggregate_name, try_literal
from shardb.sql.catalog import TableSchema
from shardb.sql.errors import MergeError, ParameterError, SqlError
from shardb.sql.evaluate import (
    Compiled,
    Compiler,
    canonical,
    explicit_collation,
    expression_collation,
    strip_parens,
)
from shardb.sql.values import (
    INT64_MAX,
    INT64_MIN,
    Collation,
    Value,
    compare,
    group_key,
    numeric_affinity,
    truth,
)

Row = tuple[Value, ...]

HIDDEN_PREFIX = "__shardb_"


class MergeMode(enum.Enum):
    CONCAT = "concat"
    SORT = "sort"
    AGGREGATE = "aggregate"


@dataclass(frozen=True, slots=True, kw_only=True)
class SortTerm:
    position: int
    """Index of the sort value in the (shard or output) row, hidden columns included."""
    descending: bool
    nulls_first: bool
    collation: Collation


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateCall:
    key: str
    """Canonical SQL of the call, as the compiled expressions look it up."""
    function: str
    """COUNT, SUM, TOTAL, AVG, MIN or MAX."""
    positions: tuple[int, ...]
    """Columns of the shard row holding its partials (AVG: TOTAL then COUNT)."""
    collation: Collation


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateSpec:
    group_keys: tuple[str, ...]
    group_collations: tuple[Collation, ...]
    calls: tuple[AggregateCall, ...]
    outputs: tuple[Compiled, ...]
    having: Compiled | None
    order_values: tuple[Compiled, ...]
    """Values of ORDER BY terms that are not result columns, appended after the outputs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectPlan:
    columns: tuple[str, ...]
    shard_query: exp.Select
    """What every range runs, before it is confined to the range's keys."""
    mode: MergeMode
    order: tuple[SortTerm, ...]
    offset: int
    limit: int | None
    aggregate: AggregateSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultSet:
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


def plan_select(statement: Select, params: Sequence[Value]) -> SelectPlan:
    tree = statement.expression.copy()
    table = statement.table
    offset, limit = _limits(tree, params)
    outputs, output_aliases = _output_expressions(tree, table)
    having = tree.args.get("having")
    order = tree.args.get("order")
    group = tree.args.get("group")
    terms: list[exp.Ordered] = list(order.expressions) if order else []
    parts: list[exp.Expr] = [*outputs, *(t.this for t in terms)]
    if having is not None:
        parts.append(having.this)
    is_aggregate = group is not None or any(_aggregates(part) for part in parts)
    resolver = _Resolver(table, outputs, output_aliases)
    if is_aggregate:
        return _plan_aggregate(statement, tree, resolver, terms, params, offset, limit)
    shard = tree.copy()
    shard.set("offset", None)
    if limit is not None:
        shard.set("limit", exp.Limit(expression=exp.Literal.number(offset + limit)))
    if not terms:
        return SelectPlan(
            columns=statement.columns,
            shard_query=shard,
            mode=MergeMode.CONCAT,
            order=(),
            offset=offset,
            limit=limit,
        )
    sort_terms: list[SortTerm] = []
    hidden: list[exp.Expr] = []
    for term in terms:
        position, expression, collation = resolver.resolve_order(term.this)
        if position is None:
            position = len(outputs) + len(hidden)
            hidden.append(exp.alias_(expression, f"{HIDDEN_PREFIX}k{len(hidden)}", copy=False))
        sort_terms.append(_sort_term(term, position, collation))
    if hidden:
        shard.set("expressions", [*shard.expressions, *hidden])
    return SelectPlan(
        columns=statement.columns,
        shard_query=shard,
        mode=MergeMode.SORT,
        order=tuple(sort_terms),
        offset=offset,
        limit=limit,
    )


def _sort_term(term: exp.Ordered, position: int, collation: Collation) -> SortTerm:
    return SortTerm(
        position=position,
        descending=bool(term.args.get("desc")),
        # sqlglot records SQLite's default explicitly: NULLs are smallest.
        nulls_first=bool(term.args.get("nulls_first")),
        collation=collation,
    )


def _limits(tree: exp.Select, params: Sequence[Value]) -> tuple[int, int | None]:
    limit_node = tree.args.get("limit")
    offset_node = tree.args.get("offset")
    limit = None if limit_node is None else _count(limit_node.expression, params, "LIMIT")
    offset = 0 if offset_node is None else _count(offset_node.expression, params, "OFFSET")
    # SQLite: a negative LIMIT means no limit, a negative OFFSET means none.
    return max(offset or 0, 0), None if limit is None or limit < 0 else limit


def _count(node: exp.Expr, params: Sequence[Value], what: str) -> int:
    ok, term = try_literal(node)
    if not ok:
        raise SqlError(f"{what} must be an integer literal or '?'")
    value = params[term.index] if isinstance(term, ParamRef) else term
    value = numeric_affinity(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{what} must be an integer, not {value!r}")
    return value


def _output_expressions(
    tree: exp.Select, table: TableSchema
) -> tuple[list[exp.Expr], list[str | None]]:
    """Result expressions with ``*`` expanded, and each one's alias (lower case) if any."""
    outputs: list[exp.Expr] = []
    aliases: list[str | None] = []
    for item in tree.expressions:
        if isinstance(item, exp.Star) or (
            isinstance(item, exp.Column) and isinstance(item.this, exp.Star)
        ):
            outputs.extend(exp.column(name, quoted=True) for name in table.column_names)
            aliases.extend(None for _ in table.column_names)
        elif isinstance(item, exp.Alias):
            outputs.append(item.this)
            aliases.append(item.alias.lower())
        else:
            outputs.append(item)
            aliases.append(None)
    return outputs, aliases


def _aggregates(node: exp.Expr) -> list[exp.Expr]:
    """Aggregate calls in ``node``, outermost only, in a defined (pre-order) order."""
    found: list[exp.Expr] = []

    def visit(current: exp.Expr) -> None:
        if aggregate_name(current) is not None:
            found.append(current)
            return
        for child in current.iter_expressions():
            visit(child)

    visit(node)
    return found


class _Resolver:
    """SQLite's name resolution for ORDER BY / GROUP BY / HAVING terms (resolveOrderGroupBy)."""

    def __init__(
        self,
        table: TableSchema,
        outputs: Sequence[exp.Expr],
        aliases: Sequence[str | None],
    ) -> None:
        self.table = table
        self.outputs = outputs
        self.alias_names = aliases
        # The first result column with a given alias wins, as in SQLite's resolveAsName.
        self.aliases: dict[str, exp.Expr] = {}
        for alias, output in zip(aliases, outputs, strict=True):
            if alias is not None:
                self.aliases.setdefault(alias, output)
        self._output_keys = [canonical(o) for o in outputs]

    def substitute_aliases(self, node: exp.Expr) -> exp.Expr:
        """Replace names that are not table columns but are result aliases by their expression.

        In expressions SQLite resolves a name to a table column first and to a result alias
        only if no column has that name (lookupName, NC_UEList).
        """

        def replace(current: exp.Expr) -> exp.Expr:
            if (
                isinstance(current, exp.Column)
                and not current.table
                and self.table.column(current.name) is None
                and current.name.lower() in self.aliases
            ):
                return exp.Paren(this=self.aliases[current.name.lower()].copy())
            return current

        return node.copy().transform(replace, copy=False)

    def ordinal(self, node: exp.Expr, clause: str) -> int | None:
        base = strip_parens(node)
        if isinstance(base, exp.Collate):
            base = strip_parens(base.this)
        if isinstance(base, exp.Literal) and not base.is_string and str(base.this).isdigit():
            number = int(str(base.this))
            if not 1 <= number <= len(self.outputs):
                raise SqlError(
                    f"{clause} term out of range - should be between 1 and {len(self.outputs)}"
                )
            return number - 1
        return None

    def resolve_order(self, node: exp.Expr) -> tuple[int | None, exp.Expr, Collation]:
        """(result column or None, expression to evaluate, collation) for an ORDER BY term."""
        explicit = explicit_collation(node)
        position = self.ordinal(node, "ORDER BY")
        base = strip_parens(node)
        if isinstance(base, exp.Collate):
            base = strip_parens(base.this)
        if position is None and isinstance(base, exp.Column) and not base.table:
            # A bare name in ORDER BY means a result alias first (resolveAsName).
            name = base.name.lower()
            if name in self.alias_names:
                position = self.alias_names.index(name)
        if position is not None:
            target = self.outputs[position]
            return position, target, explicit or expression_collation(target, self.table)
        expression = self.substitute_aliases(node)
        key = canonical(strip_parens(expression))
        if key in self._output_keys:
            position = self._output_keys.index(key)
        return position, expression, explicit or expression_collation(expression, self.table)


def _plan_aggregate(
    statement: Select,
    tree: exp.Select,
    resolver: _Resolver,
    terms: Sequence[exp.Ordered],
    params: Sequence[Value],
    offset: int,
    limit: int | None,
) -> SelectPlan:
    table = statement.table
    group = tree.args.get("group")
    group_exprs: list[exp.Expr] = []
    for term in group.expressions if group else []:
        position = resolver.ordinal(term, "GROUP BY")
        if position is not None:
            group_exprs.append(resolver.outputs[position].copy())
        else:
            group_exprs.append(resolver.substitute_aliases(term))
    having_node = tree.args.get("having")
    having = None if having_node is None else resolver.substitute_aliases(having_node.this)
    resolved_order = [resolver.resolve_order(term.this) for term in terms]
    scanned: list[exp.Expr] = [*resolver.outputs, *(e for _, e, _ in resolved_order)]
    if having is not None:
        scanned.append(having)
    calls: list[AggregateCall] = []
    partial_exprs: list[exp.Expr] = []
    seen: list[str] = []
    for node in itertools.chain.from_iterable(_aggregates(part) for part in scanned):
        key = canonical(node)
        if key in seen:
            continue
        seen.append(key)
        calls.append(_aggregate_call(node, key, table, len(group_exprs), partial_exprs))
    group_keys = tuple(canonical(g) for g in group_exprs)
    compiler = Compiler(table, [*group_keys, *seen], params)
    outputs = tuple(compiler.compile(o) for o in resolver.outputs)
    sort_terms: list[SortTerm] = []
    order_values: list[Compiled] = []
    for term, (position, expression, collation) in zip(terms, resolved_order, strict=True):
        if position is None:
            position = len(outputs) + len(order_values)
            order_values.append(compiler.compile(expression))
        sort_terms.append(_sort_term(term, position, collation))
    shard = tree.copy()
    shard.set(
        "expressions",
        [
            *(
                exp.alias_(g.copy(), f"{HIDDEN_PREFIX}g{i}", copy=False)
                for i, g in enumerate(group_exprs)
            ),
            *(
                exp.alias_(p, f"{HIDDEN_PREFIX}a{i}", copy=False)
                for i, p in enumerate(partial_exprs)
            ),
        ],
    )
    shard.set(
        "group", exp.Group(expressions=[g.copy() for g in group_exprs]) if group_exprs else None
    )
    for clause in ("having", "order", "limit", "offset"):
        shard.set(clause, None)
    spec = AggregateSpec(
        group_keys=group_keys,
        group_collations=tuple(expression_collation(g, table) for g in group_exprs),
        calls=tuple(calls),
        outputs=outputs,
        having=None if having is None else compiler.compile(having),
        order_values=tuple(order_values),
    )
    return SelectPlan(
        columns=statement.columns,
        shard_query=shard,
        mode=MergeMode.AGGREGATE,
        order=tuple(sort_terms),
        offset=offset,
        limit=limit,
        aggregate=spec,
    )


def _aggregate_call(
    node: exp.Expr,
    key: str,
    table: TableSchema,
    group_count: int,
    partial_exprs: list[exp.Expr],
) -> AggregateCall:
    function = aggregate_name(node)
    if function is None:  # pragma: no cover - _aggregates only yields aggregates
        raise SqlError(f"not an aggregate: {key}")
    argument = node.this if not isinstance(node, exp.Anonymous) else node.expressions[0]
    first = group_count + len(partial_exprs)
    if function == "AVG":
        # AVG is not decomposable; TOTAL (a REAL sum, no overflow, as SQLite's avg
        # accumulates) and COUNT of the same argument are.
        partial_exprs.append(exp.Anonymous(this="TOTAL", expressions=[argument.copy()]))
        partial_exprs.append(exp.Count(this=argument.copy()))
        positions: tuple[int, ...] = (first, first + 1)
    else:
        partial_exprs.append(node.copy())
        positions = (first,)
    collation = (
        expression_collation(argument, table)
        if isinstance(argument, exp.Expr) and function in ("MIN", "MAX")
        else Collation.BINARY
    )
    return AggregateCall(key=key, function=function, positions=positions, collation=collation)


# --- merging ---------------------------------------------------------------------------------


def merge_select(plan: SelectPlan, results: Sequence[Sequence[Sequence[Value]]]) -> ResultSet:
    """Combine the rows each range returned (in target order) into SQLite's result."""
    width = len(plan.columns)
    match plan.mode:
        case MergeMode.CONCAT:
            rows: Iterable[Sequence[Value]] = itertools.chain.from_iterable(results)
        case MergeMode.SORT:
            key = functools.cmp_to_key(functools.partial(_compare_rows, plan.order))
            rows = heapq.merge(*results, key=key)
        case MergeMode.AGGREGATE:
            if plan.aggregate is None:  # pragma: no cover - set by plan_select
                raise MergeError("aggregate plan without aggregates")
            rows = _aggregate_rows(plan, plan.aggregate, results)
    window = _window(rows, plan.offset, plan.limit)
    return ResultSet(columns=plan.columns, rows=tuple(tuple(row[:width]) for row in window))


def _window(
    rows: Iterable[Sequence[Value]], offset: int, limit: int | None
) -> Iterator[Sequence[Value]]:
    stop = None if limit is None else offset + limit
    return itertools.islice(rows, offset, stop)


def _compare_rows(order: Sequence[SortTerm], left: Sequence[Value], right: Sequence[Value]) -> int:
    for term in order:
        a, b = left[term.position], right[term.position]
        if a is None or b is None:
            if a is None and b is None:
                continue
            # NULLS FIRST/LAST is about output position, independent of DESC.
            return (-1 if a is None else 1) * (1 if term.nulls_first else -1)
        result = compare(a, b, term.collation)
        if result:
            return -result if term.descending else result
    return 0


class _Accumulator:
    __slots__ = ("best", "call", "count", "has_value", "is_real", "total")

    def __init__(self, call: AggregateCall) -> None:
        self.call = call
        self.count = 0
        self.has_value = False
        self.is_real = False
        self.total: int | float = 0
        self.best: Value = None

    def add(self, row: Sequence[Value]) -> None:
        function = self.call.function
        value = row[self.call.positions[0]]
        if function == "COUNT":
            self.count += _int(value)
        elif function in ("SUM", "TOTAL", "AVG"):
            if value is not None:
                self.has_value = True
                self.is_real = self.is_real or isinstance(value, float)
                self.total = self.total + value if isinstance(value, int | float) else self.total
            if function == "AVG":
                self.count += _int(row[self.call.positions[1]])
        elif value is not None:
            if not self.has_value:
                self.best, self.has_value = value, True
                return
            order = compare(value, self.best, self.call.collation)
            if (order < 0) if function == "MIN" else (order > 0):
                self.best = value

    def result(self) -> Value:
        function = self.call.function
        if function == "COUNT":
            return self.count
        if function == "TOTAL":
            return float(self.total)
        if function == "AVG":
            return None if self.count == 0 else float(self.total) / float(self.count)
        if function == "SUM":
            if not self.has_value:
                return None
            if self.is_real:
                return float(self.total)
            if not INT64_MIN <= self.total <= INT64_MAX:
                raise MergeError("integer overflow")
            return self.total
        return self.best


def _int(value: Value) -> int:
    if isinstance(value, int):
        return value
    raise MergeError(f"a range returned {value!r} for a COUNT")


def _aggregate_rows(
    plan: SelectPlan, spec: AggregateSpec, results: Sequence[Sequence[Sequence[Value]]]
) -> list[Row]:
    group_count = len(spec.group_keys)
    groups: dict[tuple[object, ...], tuple[Row, list[_Accumulator]]] = {}
    for row in itertools.chain.from_iterable(results):
        identity = tuple(group_key(row[i], spec.group_collations[i]) for i in range(group_count))
        entry = groups.get(identity)
        if entry is None:
            entry = (tuple(row[:group_count]), [_Accumulator(call) for call in spec.calls])
            groups[identity] = entry
        for accumulator in entry[1]:
            accumulator.add(row)
    if group_count == 0 and not groups:
        groups[()] = ((), [_Accumulator(call) for call in spec.calls])

    def by_group_key(a: tuple[Row, list[_Accumulator]], b: tuple[Row, list[_Accumulator]]) -> int:
        return _compare_group_keys(a[0], b[0], spec.group_collations)

    # SQLite emits groups in group-key order; keep that as the order before ORDER BY.
    ordered = sorted(groups.values(), key=functools.cmp_to_key(by_group_key))
    rows: list[Row] = []
    for values, accumulators in ordered:
        env: dict[str, Value] = dict(zip(spec.group_keys, values, strict=True))
        for accumulator in accumulators:
            env[accumulator.call.key] = accumulator.result()
        if spec.having is not None and truth(spec.having(env)) is not True:
            continue
        output = tuple(compute(env) for compute in spec.outputs)
        hidden = tuple(compute(env) for compute in spec.order_values)
        rows.append(output + hidden)
    if plan.order:
        rows.sort(key=functools.cmp_to_key(functools.partial(_compare_rows, plan.order)))
    return rows


def _compare_group_keys(left: Row, right: Row, collations: Sequence[Collation]) -> int:
    for a, b, collation in zip(left, right, collations, strict=True):
        result = compare(a, b, collation)
        if result:
            return result
    return 0


def merge_rowcounts(counts: Iterable[int]) -> int:
    """A write's rows changed: each row lives in exactly one range, so counts add up."""
    return sum(counts)


__all__ = [
    "AggregateCall",
    "AggregateSpec",
    "MergeMode",
    "ResultSet",
    "SelectPlan",
    "SortTerm",
    "merge_rowcounts",
    "merge_select",
    "plan_select",
]
