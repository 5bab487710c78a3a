"""Operation histories for correctness workloads, and their linearizability check.

A ``HistoryRecorder`` records what each client saw: the operation, its key and value, the
invocation and completion times on ONE monotonic clock supplied by the caller, and the
outcome ``ok`` / ``fail`` / ``unknown``. ``check_linearizable`` hands the history, key by
key, to the project's checker (``consensus.sim.linearizability``: Wing & Gong search with
Lowe's just-in-time linearization and memoisation; registers compose, Herlihy & Wing §3.3),
where an unknown write may take effect at any time after its invocation, or never.

Two workloads produce such histories:

- ``KvWorkload``: write-only puts on a key space (throughput, and "no acknowledged write
  lost" when followed by ``check_linearizable(..., final_values=...)``);
- ``RegisterWorkload``: reads, writes and compare-and-sets on a few keys, the classic
  Jepsen register test. Every write installs a value never written before, so a read names
  exactly one write and a stale read cannot hide.

Both map to SQL on ``<table>(k TEXT PRIMARY KEY, v INTEGER)`` (``RegisterTable``).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from consensus.sim.kv import Op
from consensus.sim.linearizability import Operation, check_history
from shardb.workload.generators import (
    NumberGenerator,
    ScrambledZipfianGenerator,
    UniformLongGenerator,
)
from shardb.workload.outcome import OpResult, Outcome, outcome_of_error
from shardb.workload.ycsb import SqlStatement, SqlValue

__all__ = [
    "HistoryEntry",
    "HistoryError",
    "HistoryRecorder",
    "KeyFailure",
    "KvWorkload",
    "LinearizabilityReport",
    "Op",
    "OpResult",
    "Outcome",
    "RegisterOp",
    "RegisterTable",
    "RegisterWorkload",
    "check_linearizable",
    "outcome_of_error",
    "record_history",
]

_LABELS: Final = {Op.GET: "read", Op.PUT: "write", Op.CAS: "cas"}


class HistoryError(ValueError):
    """The recorder was used in a way that cannot describe a real history."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    id: int
    client: int
    op: Op
    key: str
    value: int | None = None
    """A write: the value written. A CAS: the value to install."""
    expected: int | None = None
    """A CAS: the value the register must hold."""
    invoke_ns: int
    complete_ns: int | None = None
    """None while pending, and for unknown outcomes that never completed."""
    outcome: Outcome = Outcome.UNKNOWN
    result: int | bool | None = None


@dataclass(slots=True)
class _Pending:
    client: int
    op: Op
    key: str
    value: int | None
    expected: int | None
    invoke_ns: int


class HistoryRecorder:
    """Thread- and task-safe: a lock guards every method, and none awaits or calls out while
    holding it, so trio tasks and worker threads may record into one recorder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._busy: dict[int, int] = {}
        self._done: dict[int, HistoryEntry] = {}

    def invoke(
        self,
        *,
        client: int,
        op: Op,
        key: str,
        at_ns: int,
        value: int | None = None,
        expected: int | None = None,
    ) -> int:
        """Record an invocation; returns the id to complete it with.

        A client is one sequential process (as in Jepsen): it may not invoke while an earlier
        operation of its own is still pending, or real-time order within it would be lost.
        """
        if op is not Op.GET and value is None:
            raise HistoryError(f"{op.value} on {key!r} needs a value")
        with self._lock:
            if client in self._busy:
                raise HistoryError(
                    f"client {client} invoked while op#{self._busy[client]} is pending"
                )
            op_id = next(self._ids)
            self._pending[op_id] = _Pending(client, op, key, value, expected, at_ns)
            self._busy[client] = op_id
            return op_id

    def complete(
        self,
        op_id: int,
        *,
        outcome: Outcome,
        at_ns: int | None,
        result: int | bool | None = None,
    ) -> HistoryEntry:
        """Record how operation ``op_id`` ended. ``at_ns`` may be None only for ``unknown``."""
        with self._lock:
            pending = self._pending.pop(op_id, None)
            if pending is None:
                raise HistoryError(f"op#{op_id} is not pending")
            del self._busy[pending.client]
            if at_ns is None and outcome is not Outcome.UNKNOWN:
                raise HistoryError(f"op#{op_id} is {outcome.value} but has no completion time")
            if at_ns is not None and at_ns < pending.invoke_ns:
                raise HistoryError(
                    f"op#{op_id} completed at {at_ns} before its invocation at "
                    f"{pending.invoke_ns}: times must come from one monotonic clock"
                )
            entry = HistoryEntry(
                id=op_id,
                client=pending.client,
                op=pending.op,
                key=pending.key,
                value=pending.value,
                expected=pending.expected,
                invoke_ns=pending.invoke_ns,
                complete_ns=at_ns,
                outcome=outcome,
                result=result if outcome is Outcome.OK else None,
            )
            self._done[op_id] = entry
            return entry

    def entries(self) -> tuple[HistoryEntry, ...]:
        """Every operation by id; still-pending ones as ``unknown`` with no completion."""
        with self._lock:
            merged = dict(self._done)
            for op_id, p in self._pending.items():
                merged[op_id] = HistoryEntry(
                    id=op_id,
                    client=p.client,
                    op=p.op,
                    key=p.key,
                    value=p.value,
                    expected=p.expected,
                    invoke_ns=p.invoke_ns,
                )
        return tuple(merged[i] for i in sorted(merged))

    def __len__(self) -> int:
        with self._lock:
            return len(self._done) + len(self._pending)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyFailure:
    key: str
    explanation: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearizabilityReport:
    linearizable: bool
    keys: int
    operations: int
    failures: tuple[KeyFailure, ...] = ()
    inconclusive: tuple[str, ...] = ()
    """Keys whose search hit its budget: neither proven nor refuted."""

    def summary(self) -> str:
        if self.failures:
            head = f"NOT linearizable on {len(self.failures)} of {self.keys} keys"
            return "\n".join([head, *(f.explanation for f in self.failures)])
        verdict = "linearizable" if not self.inconclusive else "no violation found"
        extra = f" (inconclusive keys: {', '.join(self.inconclusive)})" if self.inconclusive else ""
        return f"{verdict}: {self.operations} operations on {self.keys} keys{extra}"


def check_linearizable(
    history: Iterable[HistoryEntry],
    *,
    final_values: Mapping[str, int | None] | None = None,
    max_steps_per_key: int = 2_000_000,
) -> LinearizabilityReport:
    """Check each key's history against a register that starts absent.

    ``final_values`` (the value of each key read after every client stopped, e.g. from every
    replica) are checked as reads that began after all operations ended: an acknowledged write
    missing from them, with no later write to explain it, is a lost write and fails the check.
    """
    entries = list(history)
    operations = [_as_operation(e) for e in entries]
    if final_values:
        last = max(
            (t for e in entries for t in (e.invoke_ns, e.complete_ns) if t is not None),
            default=0,
        )
        next_id = max((e.id for e in entries), default=0) + 1
        # A fresh client per key: these reads are concurrent with nothing but unknown writes.
        for offset, key in enumerate(sorted(final_values)):
            operations.append(
                Operation(
                    id=next_id + offset,
                    client=-1 - offset,
                    op=Op.GET,
                    key=key,
                    invoke_us=last + 1,
                    complete_us=last + 2,
                    outcome=Outcome.OK,
                    result=final_values[key],
                )
            )
    result = check_history(operations, max_steps_per_key=max_steps_per_key)
    return LinearizabilityReport(
        linearizable=result.linearizable,
        keys=len(result.keys),
        operations=len(operations),
        failures=tuple(
            KeyFailure(key=k.key, explanation=k.counterexample) for k in result.failures
        ),
        inconclusive=result.inconclusive,
    )


def _as_operation(entry: HistoryEntry) -> Operation:
    # The checker's fields say microseconds but it only compares times; nanoseconds keep the
    # recorder's full resolution, so no two ordered operations become concurrent by rounding.
    return Operation(
        id=entry.id,
        client=entry.client,
        op=entry.op,
        key=entry.key,
        value=entry.value,
        expected=entry.expected,
        invoke_us=entry.invoke_ns,
        complete_us=None if entry.outcome is Outcome.UNKNOWN else entry.complete_ns,
        outcome=entry.outcome,
        result=entry.result,
    )


# ---------------------------------------------------------------------------------------------
# Register and kv workloads


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterOp:
    op: Op
    key: str
    value: int | None = None
    expected: int | None = None

    @property
    def label(self) -> str:
        return _LABELS[self.op]


@dataclass(frozen=True, slots=True)
class RegisterTable:
    """SQL for register operations on ``<name>(k TEXT PRIMARY KEY, v INTEGER)``."""

    name: str = "register"

    def create_sql(self) -> str:
        return f"CREATE TABLE {self.name} (k TEXT PRIMARY KEY, v INTEGER)"

    def statement(self, op: RegisterOp) -> SqlStatement:
        match op.op:
            case Op.GET:
                return SqlStatement(f"SELECT v FROM {self.name} WHERE k = ?", (op.key,))
            case Op.PUT:
                return SqlStatement(
                    f"INSERT INTO {self.name} (k, v) VALUES (?, ?) "
                    "ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    (op.key, op.value),
                )
            case Op.CAS:
                # One conditional UPDATE is atomic on the range's replicas: it swaps iff the
                # row holds ``expected``, and reports that as rowcount 1.
                return SqlStatement(
                    f"UPDATE {self.name} SET v = ? WHERE k = ? AND v = ?",
                    (op.value, op.key, op.expected),
                )

    @staticmethod
    def result_of(op: RegisterOp, rows: Sequence[Sequence[SqlValue]], rowcount: int) -> OpResult:
        """Turn a successful SQL result into the register result the checker needs."""
        match op.op:
            case Op.GET:
                if len(rows) > 1:
                    raise HistoryError(f"read of {op.key!r} returned {len(rows)} rows")
                value = rows[0][0] if rows else None
                if value is not None and not isinstance(value, int):
                    raise HistoryError(f"read of {op.key!r} returned {value!r}, not an int")
                return OpResult(outcome=Outcome.OK, result=value)
            case Op.CAS:
                return OpResult(outcome=Outcome.OK, result=rowcount == 1)
            case _:
                return OpResult(outcome=Outcome.OK)


def _key_chooser(keys: int, distribution: str, rng: random.Random) -> NumberGenerator:
    if keys < 1:
        raise ValueError(f"need at least one key, got {keys}")
    match distribution:
        case "uniform":
            return UniformLongGenerator(0, keys - 1, rng=rng)
        case "zipfian":
            return ScrambledZipfianGenerator(0, keys - 1, rng=rng)
        case _:
            raise ValueError(f"key distribution must be uniform or zipfian, got {distribution!r}")


class _UniqueValues:
    """Values never written before by any workload sharing ``base`` spacing.

    Workers in different processes pass distinct ``worker`` numbers, so their values never
    collide either: a read then names exactly one write.
    """

    def __init__(self, worker: int) -> None:
        if not 0 <= worker < 1 << 20:
            raise ValueError(f"worker must be in [0, 2**20), got {worker}")
        self._next = (worker << 40) + 1

    def next(self) -> int:
        value = self._next
        self._next += 1
        return value


class KvWorkload:
    """Write-only puts of unique values to ``key_prefix + n`` for ``n`` in ``[0, keys)``."""

    def __init__(
        self,
        *,
        keys: int,
        rng: random.Random,
        distribution: str = "uniform",
        key_prefix: str = "kv",
        worker: int = 0,
        operation_count: int = 0,
    ) -> None:
        self._keys = _key_chooser(keys, distribution, rng)
        self._prefix = key_prefix
        self._values = _UniqueValues(worker)
        self._remaining = operation_count or -1

    def next_operation(self) -> RegisterOp | None:
        if self._remaining == 0:
            return None
        self._remaining -= 1
        key = f"{self._prefix}{self._keys.next_value()}"
        return RegisterOp(op=Op.PUT, key=key, value=self._values.next())

    def complete(self, op: RegisterOp, outcome: Outcome) -> None:
        del op, outcome


class RegisterWorkload:
    """Reads, writes and compare-and-sets on a few keys (Jepsen's register test).

    A CAS expects a value recently written to its key by this workload (so it sometimes
    swaps); on a key this workload has not written yet, a write is issued instead.
    """

    _RECENT: Final = 4

    def __init__(
        self,
        *,
        keys: int = 5,
        rng: random.Random,
        read_proportion: float = 0.5,
        write_proportion: float = 0.3,
        cas_proportion: float = 0.2,
        key_prefix: str = "r",
        worker: int = 0,
        operation_count: int = 0,
    ) -> None:
        total = read_proportion + write_proportion + cas_proportion
        if min(read_proportion, write_proportion, cas_proportion) < 0 or total <= 0:
            raise ValueError("proportions must be >= 0 and not all 0")
        self._rng = rng
        self._keys = _key_chooser(keys, "uniform", rng)
        self._prefix = key_prefix
        self._values = _UniqueValues(worker)
        self._read = read_proportion / total
        self._write = write_proportion / total
        self._recent: dict[str, list[int]] = {}
        self._remaining = operation_count or -1

    def next_operation(self) -> RegisterOp | None:
        if self._remaining == 0:
            return None
        self._remaining -= 1
        key = f"{self._prefix}{self._keys.next_value()}"
        draw = self._rng.random()
        if draw < self._read:
            return RegisterOp(op=Op.GET, key=key)
        recent = self._recent.setdefault(key, [])
        value = self._values.next()
        if draw < self._read + self._write or not recent:
            recent.append(value)
            del recent[: -self._RECENT]
            return RegisterOp(op=Op.PUT, key=key, value=value)
        recent.append(value)
        del recent[: -self._RECENT]
        return RegisterOp(op=Op.CAS, key=key, value=value, expected=self._rng.choice(recent[:-1]))

    def complete(self, op: RegisterOp, outcome: Outcome) -> None:
        del op, outcome


def record_history(
    execute: Callable[[RegisterOp, int], Awaitable[OpResult]],
    recorder: HistoryRecorder,
    now_ns: Callable[[], int],
) -> Callable[[RegisterOp, int], Awaitable[OpResult]]:
    """Wrap an executor so every operation lands in ``recorder``.

    The invocation is stamped just before the executor runs and the completion just after,
    both from ``now_ns``. An executor that raises, or is cancelled (a deadline), leaves an
    ``unknown`` entry: the request may have reached the database.
    """

    async def recorded(op: RegisterOp, client: int) -> OpResult:
        op_id = recorder.invoke(
            client=client, op=op.op, key=op.key, value=op.value, expected=op.expected,
            at_ns=now_ns(),
        )  # fmt: skip
        try:
            result = await execute(op, client)
        except BaseException:
            recorder.complete(op_id, outcome=Outcome.UNKNOWN, at_ns=None)
            raise
        recorder.complete(
            op_id,
            outcome=result.outcome,
            at_ns=None if result.outcome is Outcome.UNKNOWN else now_ns(),
            result=result.result,
        )
        return result

    return recorded
