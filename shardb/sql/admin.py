"""shardb's own statements, answered from the range map: SHOW RANGES, SHOW RANGE, SPLIT AT."""

from __future__ import annotations

from collections.abc import Sequence

from shardb.placement.descriptors import Key, RangeDescriptor, RangeMap
from shardb.sql.analyze import ShowRangeForRow, ShowRanges, SplitAt
from shardb.sql.errors import RoutingError
from shardb.sql.merge import ResultSet
from shardb.sql.route import check_params, normalize_key, resolve_term

RANGE_COLUMNS = ("range_id", "start_key", "end_key", "group_id", "replicas", "backend", "epoch")


def _range_row(descriptor: RangeDescriptor) -> tuple[int | str | None, ...]:
    return (
        descriptor.range_id,
        descriptor.start_key,
        descriptor.end_key,
        int(descriptor.group_id),
        ",".join(str(int(node)) for node in descriptor.replicas),
        descriptor.backend,
        descriptor.epoch,
    )


def show_ranges(statement: ShowRanges, ranges: RangeMap) -> ResultSet:
    del statement  # the table is already resolved into ``ranges``
    return ResultSet(columns=RANGE_COLUMNS, rows=tuple(_range_row(r) for r in ranges.ranges))


def show_range_for_row(
    statement: ShowRangeForRow, params: Sequence[object], ranges: RangeMap
) -> ResultSet:
    values = check_params(statement, params)
    key = normalize_key(resolve_term(statement.key, values), statement.table.key_type)
    return ResultSet(columns=RANGE_COLUMNS, rows=(_range_row(ranges.lookup(key)),))


def split_keys(statement: SplitAt, params: Sequence[object], ranges: RangeMap) -> tuple[Key, ...]:
    """The new range start keys ``statement`` asks for, sorted; existing boundaries refused."""
    values = check_params(statement, params)
    keys = sorted(
        {
            normalize_key(resolve_term(term, values), statement.table.key_type)
            for term in statement.keys
        },
        key=lambda k: (isinstance(k, str), k),
    )
    for key in keys:
        starts_here = ranges.lookup(key).start_key == key
        if statement.unsplit and not starts_here:
            raise RoutingError(f"no range starts at {key!r}: nothing to unsplit there")
        if not statement.unsplit and starts_here:
            raise RoutingError(f"{key!r} is already the start of a range")
    return tuple(keys)


def range_filter(pk_column: str, descriptor: RangeDescriptor) -> tuple[str, list[Key]]:
    """`` WHERE pk >= ? AND pk < ?`` (as far as the range is bounded) and its parameters:
    a query confined to one range's keys on a node's shared physical table."""
    pk = '"' + pk_column.replace('"', '""') + '"'
    where: list[str] = []
    params: list[Key] = []
    if descriptor.start_key is not None:
        where.append(f"{pk} >= ?")
        params.append(descriptor.start_key)
    if descriptor.end_key is not None:
        where.append(f"{pk} < ?")
        params.append(descriptor.end_key)
    return (f" WHERE {' AND '.join(where)}" if where else ""), params
