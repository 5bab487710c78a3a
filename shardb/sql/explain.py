"""EXPLAIN: what the gateway would do for a statement, as rows, without running it.

One ``route`` row (the route kind and the key intervals it derived), one ``merge`` row for a
SELECT (how the results are combined), then one ``range`` row per range touched with the exact
sub-statement and parameters that range would run.
"""

from __future__ import annotations

from collections.abc import Sequence

from shardb.placement.descriptors import RangeMap
from shardb.sql.analyze import Explain
from shardb.sql.merge import MergeMode, ResultSet, SelectPlan
from shardb.sql.route import KeySet, Route, route

EXPLAIN_COLUMNS = ("step", "range_id", "group_id", "detail")


def explain(statement: Explain, params: Sequence[object], ranges: RangeMap | None) -> ResultSet:
    planned = route(statement.statement, params, ranges)
    return ResultSet(columns=EXPLAIN_COLUMNS, rows=explain_rows(planned, ranges))


def explain_rows(
    planned: Route, ranges: RangeMap | None
) -> tuple[tuple[str | int | None, ...], ...]:
    total = 0 if ranges is None else len(ranges.ranges)
    summary = (
        f"{planned.kind.value} {planned.statement.value} on {planned.table}: "
        f"{len(planned.targets)} of {total} ranges; keys {describe_keys(planned.keys)}"
    )
    rows: list[tuple[str | int | None, ...]] = [("route", None, None, summary)]
    if planned.select is not None:
        rows.append(("merge", None, None, describe_merge(planned.select)))
    for target in planned.targets:
        detail = target.sql if not target.params else f"{target.sql} -- params {target.params!r}"
        rows.append(("range", target.range.range_id, int(target.range.group_id), detail))
    return tuple(rows)


def describe_keys(keys: KeySet) -> str:
    if keys is None:
        return "all"
    if not keys:
        return "none"
    parts: list[str] = []
    for interval in keys:
        if interval.is_point:
            parts.append(repr(interval.low))
            continue
        low = "-inf" if interval.low is None else repr(interval.low)
        high = "+inf" if interval.high is None else repr(interval.high)
        left = "(" if interval.low_open or interval.low is None else "["
        right = ")" if interval.high_open or interval.high is None else "]"
        parts.append(f"{left}{low}, {high}{right}")
    return ", ".join(parts)


def describe_merge(plan: SelectPlan) -> str:
    window = f"offset {plan.offset}" + ("" if plan.limit is None else f" limit {plan.limit}")
    match plan.mode:
        case MergeMode.CONCAT:
            how = "concatenate"
        case MergeMode.SORT:
            how = f"heap-merge on {len(plan.order)} sort keys"
        case MergeMode.AGGREGATE:
            spec = plan.aggregate
            groups = 0 if spec is None else len(spec.group_keys)
            calls = "" if spec is None else ", ".join(c.function for c in spec.calls)
            how = f"combine partial aggregates ({calls or 'none'}) over {groups} group keys"
            if spec is not None and spec.having is not None:
                how += ", then HAVING"
            if plan.order:
                how += ", then sort"
    return f"{how}; {window}"
