"""Range descriptors and the range map: which consensus group owns which primary keys.

A table's primary-key space is cut into half-open ranges ``[start_key, end_key)``; ``None``
stands for minus infinity as a start and plus infinity as an end. Each range is one consensus
group. Keys are SQLite INTEGER or TEXT primary keys; a table's ranges all use its key type, so
comparisons never mix types (SQLite orders all INTEGERs before all TEXT values, and a table has
one primary-key type).

``epoch`` increases whenever a range's bounds or replicas change (split, merge, move), so a
request routed with an old descriptor can be detected and refused (``StaleEpoch``) by the
replica that now holds a newer one.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consensus.types import GroupId, NodeId
from shardb.placement.wire import optional

Key = int | str
"""A primary-key value: SQLite INTEGER or TEXT."""


class RangeMapError(ValueError):
    """The ranges given do not tile the key space of their table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeDescriptor:
    range_id: int
    table: str
    start_key: Key | None
    """Inclusive lower bound; None = unbounded below."""
    end_key: Key | None
    """Exclusive upper bound; None = unbounded above."""
    group_id: GroupId
    replicas: tuple[NodeId, ...]
    """The group's voters."""
    backend: str
    """"raft" or "paxos" (``consensus.backends.Backend`` values)."""
    epoch: int = 1
    learners: tuple[NodeId, ...] = optional(())
    """Non-voting members catching up before they are promoted (a move's first step);
    never also in ``replicas``. Last, with a default, so records without it still decode."""

    def contains(self, key: Key) -> bool:
        if self.start_key is not None and key < self.start_key:  # type: ignore[operator]  # one key type per table
            return False
        return self.end_key is None or key < self.end_key  # type: ignore[operator]  # one key type per table


def start_order(key: Key | None) -> tuple[int, Key | int]:
    """Sort key for a range start within one table: None (minus infinity) first."""
    return (0, 0) if key is None else (1, key)


@dataclass(frozen=True, slots=True)
class RangeMap:
    """The ranges of one table, sorted and checked to tile the whole key space exactly once."""

    table: str
    ranges: tuple[RangeDescriptor, ...]
    starts: tuple[Key, ...]
    """Start keys of ``ranges[1:]``, for bisection."""

    @classmethod
    def build(cls, table: str, ranges: Iterable[RangeDescriptor]) -> RangeMap:
        ordered = tuple(sorted(ranges, key=lambda r: start_order(r.start_key)))
        if not ordered:
            raise RangeMapError(f"table {table!r} has no ranges")
        if ordered[0].start_key is not None:
            raise RangeMapError(f"first range of {table!r} must start unbounded")
        if ordered[-1].end_key is not None:
            raise RangeMapError(f"last range of {table!r} must end unbounded")
        for left, right in itertools.pairwise(ordered):
            if left.table != table or right.table != table:
                raise RangeMapError("ranges of another table in the map")
            if left.end_key is None or left.end_key != right.start_key:
                raise RangeMapError(
                    f"ranges {left.range_id} and {right.range_id} of {table!r} do not meet "
                    f"({left.end_key!r} vs {right.start_key!r})"
                )
            if right.end_key is not None and not right.start_key < right.end_key:  # type: ignore[operator]  # one key type per table
                raise RangeMapError(f"range {right.range_id} is empty or inverted")
        if ordered[0].table != table:
            raise RangeMapError("ranges of another table in the map")
        starts = tuple(r.start_key for r in ordered[1:] if r.start_key is not None)
        return cls(table=table, ranges=ordered, starts=starts)

    def lookup(self, key: Key) -> RangeDescriptor:
        """The one range that holds ``key``."""
        return self.ranges[bisect.bisect_right(self.starts, key)]

    def overlapping(
        self, low: Key | None, high: Key | None, *, high_inclusive: bool = False
    ) -> Sequence[RangeDescriptor]:
        """Ranges that may hold keys in ``[low, high)`` (``[low, high]`` if inclusive)."""
        starts = self.starts
        first = 0 if low is None else bisect.bisect_right(starts, low)
        if high is None:
            last = len(self.ranges) - 1
        elif high_inclusive:
            last = bisect.bisect_right(starts, high)
        else:
            last = bisect.bisect_left(starts, high)
        return self.ranges[first : last + 1]
