"""History recording and the per-key linearizability check of register/kv workloads.

Reference: Herlihy & Wing 1990 (linearizability, locality §3.3); Jepsen/Knossos (the
register test, ``info``/unknown outcomes); Lowe 2017 (the checker's search).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from consensus.sim.kv import Op
from shardb.workload import (
    HistoryError,
    HistoryRecorder,
    KvWorkload,
    OpResult,
    Outcome,
    RegisterOp,
    RegisterTable,
    RegisterWorkload,
    TrioClock,
    check_linearizable,
    outcome_of_error,
    record_history,
    run_phase,
)


def _put(rec: HistoryRecorder, client: int, key: str, value: int, t0: int, t1: int) -> None:
    op_id = rec.invoke(client=client, op=Op.PUT, key=key, value=value, at_ns=t0)
    rec.complete(op_id, outcome=Outcome.OK, at_ns=t1)


def _get(rec: HistoryRecorder, client: int, key: str, seen: int | None, t0: int, t1: int) -> None:
    op_id = rec.invoke(client=client, op=Op.GET, key=key, at_ns=t0)
    rec.complete(op_id, outcome=Outcome.OK, at_ns=t1, result=seen)


def test_stale_read_after_a_completed_write_is_caught() -> None:
    """Herlihy & Wing: a read that starts after write(2) completed must not return 1."""
    rec = HistoryRecorder()
    _put(rec, 1, "x", 1, 0, 10)
    _put(rec, 1, "x", 2, 20, 30)
    _get(rec, 2, "x", 1, 40, 50)
    _put(rec, 1, "y", 5, 0, 10)
    report = check_linearizable(rec.entries())
    assert not report.linearizable
    assert [f.key for f in report.failures] == ["x"]
    assert "get(x)" in report.failures[0].explanation
    assert "NOT linearizable" in report.summary()


def test_concurrent_read_may_see_old_or_new_value() -> None:
    """A read overlapping write(2) may return 1 or 2: both histories are linearizable."""
    for seen in (1, 2):
        rec = HistoryRecorder()
        _put(rec, 1, "x", 1, 0, 10)
        _put(rec, 1, "x", 2, 20, 40)
        _get(rec, 2, "x", seen, 30, 35)
        assert check_linearizable(rec.entries()).linearizable


def test_unknown_write_may_take_effect_late_or_never() -> None:
    """Jepsen ``info``: an unknown write may take effect any time after its invocation, or
    never, but not un-happen once a read has observed it."""
    rec = HistoryRecorder()
    _put(rec, 1, "x", 1, 0, 10)
    lost = rec.invoke(client=1, op=Op.PUT, key="x", value=2, at_ns=20)
    rec.complete(lost, outcome=Outcome.UNKNOWN, at_ns=None)
    _get(rec, 2, "x", 1, 100, 110)
    _get(rec, 2, "x", 2, 200, 210)
    assert check_linearizable(rec.entries()).linearizable
    _get(rec, 2, "x", 1, 300, 310)
    assert not check_linearizable(rec.entries()).linearizable


def test_final_values_catch_a_lost_acknowledged_write() -> None:
    """An acknowledged write must survive: final reads that show an older value, with no
    later write to explain it, fail the check."""
    rec = HistoryRecorder()
    _put(rec, 1, "x", 1, 0, 10)
    _put(rec, 1, "x", 2, 20, 30)
    assert check_linearizable(rec.entries(), final_values={"x": 2}).linearizable
    report = check_linearizable(rec.entries(), final_values={"x": 1})
    assert not report.linearizable
    assert not check_linearizable(rec.entries(), final_values={"x": None}).linearizable


def test_pending_operations_are_reported_unknown() -> None:
    rec = HistoryRecorder()
    op_id = rec.invoke(client=3, op=Op.PUT, key="k", value=9, at_ns=5)
    (entry,) = rec.entries()
    assert entry.id == op_id and entry.outcome is Outcome.UNKNOWN and entry.complete_ns is None


def test_recorder_rejects_histories_no_real_client_could_produce() -> None:
    """A client is one sequential process; completions cannot precede invocations."""
    rec = HistoryRecorder()
    first = rec.invoke(client=1, op=Op.GET, key="k", at_ns=10)
    with pytest.raises(HistoryError, match="pending"):
        rec.invoke(client=1, op=Op.GET, key="k", at_ns=11)
    with pytest.raises(HistoryError, match="before its invocation"):
        rec.complete(first, outcome=Outcome.OK, at_ns=5)
    second = rec.invoke(client=2, op=Op.GET, key="k", at_ns=12)
    with pytest.raises(HistoryError, match="no completion time"):
        rec.complete(second, outcome=Outcome.OK, at_ns=None)
    with pytest.raises(HistoryError, match="not pending"):
        rec.complete(12345, outcome=Outcome.OK, at_ns=20)
    with pytest.raises(HistoryError, match="needs a value"):
        rec.invoke(client=3, op=Op.PUT, key="k", at_ns=1)


def test_recorder_is_thread_safe() -> None:
    """Threads recording at once lose nothing and never share an id."""
    rec = HistoryRecorder()

    def worker(client: int) -> None:
        for i in range(500):
            op_id = rec.invoke(
                client=client, op=Op.PUT, key="k", value=client * 10_000 + i, at_ns=i
            )
            rec.complete(op_id, outcome=Outcome.OK, at_ns=i + 1)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = rec.entries()
    assert len(entries) == 4000 == len({e.id for e in entries})


def test_error_codes_map_to_outcomes() -> None:
    """Only errors proving nothing was applied are ``fail``; ambiguous ones are ``unknown``."""
    for code in ("not_leader", "unavailable", "constraint", "syntax_error", "overloaded"):
        assert outcome_of_error(code) is Outcome.FAIL
    for code in ("timeout", "unknown_outcome", "partial", "internal", "connection_lost"):
        assert outcome_of_error(code) is Outcome.UNKNOWN


def test_register_workload_values_are_unique_and_cas_expects_written_values() -> None:
    """Unique values let a read name exactly one write; a CAS expects a value this workload
    wrote to that key, so swaps can succeed."""
    workload = RegisterWorkload(keys=3, rng=random.Random(1), operation_count=3000)
    ops = list(iter(workload.next_operation, None))
    kinds = Counter(op.op for op in ops)
    assert kinds[Op.GET] > 1200 and kinds[Op.PUT] > 700 and kinds[Op.CAS] > 400
    values = [op.value for op in ops if op.op is not Op.GET]
    assert len(values) == len(set(values))
    written: dict[str, set[int]] = {}
    for op in ops:
        if op.op is Op.CAS:
            assert op.expected in written[op.key]
        if op.value is not None:
            written.setdefault(op.key, set()).add(op.value)
    assert {op.key for op in ops} == {"r0", "r1", "r2"}
    other = RegisterWorkload(keys=3, rng=random.Random(1), worker=1, operation_count=100)
    assert not {op.value for op in iter(other.next_operation, None)} & set(values)


def test_kv_workload_is_write_only_with_unique_values() -> None:
    workload = KvWorkload(
        keys=50, rng=random.Random(2), distribution="zipfian", operation_count=500
    )
    ops = list(iter(workload.next_operation, None))
    assert len(ops) == 500 and all(op.op is Op.PUT for op in ops)
    assert len({op.value for op in ops}) == 500
    assert all(op.key.startswith("kv") and 0 <= int(op.key[2:]) < 50 for op in ops)


def test_register_sql_has_register_semantics_on_sqlite() -> None:
    """The register's SQL on SQLite: absent read is None, write upserts, CAS swaps iff the
    row holds the expected value (rowcount 1)."""
    import sqlite3

    table = RegisterTable()
    db = sqlite3.connect(":memory:")
    db.execute(table.create_sql())

    def run(op: RegisterOp) -> OpResult:
        statement = table.statement(op)
        cursor = db.execute(statement.sql, statement.params)
        return RegisterTable.result_of(op, cursor.fetchall(), cursor.rowcount)

    assert run(RegisterOp(op=Op.GET, key="a")).result is None
    assert run(RegisterOp(op=Op.CAS, key="a", value=5, expected=1)).result is False
    run(RegisterOp(op=Op.PUT, key="a", value=1))
    run(RegisterOp(op=Op.PUT, key="a", value=2))
    assert run(RegisterOp(op=Op.GET, key="a")).result == 2
    assert run(RegisterOp(op=Op.CAS, key="a", value=3, expected=1)).result is False
    assert run(RegisterOp(op=Op.CAS, key="a", value=3, expected=2)).result is True
    assert run(RegisterOp(op=Op.GET, key="a")).result == 3


# --- end to end: driver + recorder + checker against an in-memory register store ------------


@dataclass
class RegisterStore:
    """A linearizable register store with an optional replica lag for reads.

    Each operation takes effect atomically at one instant inside its interval. With
    ``read_lag_ns`` > 0, reads are answered from a replica that is that far behind: the
    stale-read bug a lease or follower read without a read barrier would have.
    """

    rng: random.Random
    read_lag_ns: int = 0
    lose_reply_every: int = 0
    versions: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    count: int = 0

    def _value_at(self, key: str, at_ns: int) -> int | None:
        value = None
        for t, v in self.versions.get(key, []):
            if t <= at_ns:
                value = v
        return value

    async def execute(self, op: RegisterOp, client: int) -> OpResult:
        del client
        clock = TrioClock()
        await trio.sleep(self.rng.uniform(0.0005, 0.003))
        now = clock.now_ns()
        self.count += 1
        result: int | bool | None = None
        match op.op:
            case Op.GET:
                result = self._value_at(op.key, now - self.read_lag_ns)
            case Op.PUT:
                assert op.value is not None
                self.versions.setdefault(op.key, []).append((now, op.value))
            case Op.CAS:
                assert op.value is not None
                result = self._value_at(op.key, now) == op.expected
                if result:
                    self.versions.setdefault(op.key, []).append((now, op.value))
        await trio.sleep(self.rng.uniform(0.0005, 0.003))
        if self.lose_reply_every and self.count % self.lose_reply_every == 0:
            return OpResult(outcome=Outcome.UNKNOWN, error="timeout")
        return OpResult(outcome=Outcome.OK, result=result)


async def _run_register(store: RegisterStore, seed: int) -> HistoryRecorder:
    clock = TrioClock()
    recorder = HistoryRecorder()
    workload = RegisterWorkload(keys=3, rng=random.Random(seed))
    await run_phase(
        source=workload,
        execute=record_history(store.execute, recorder, clock.now_ns),
        clock=clock,
        clients=6,
        duration_ns=2 * 10**9,
    )
    return recorder


async def test_checker_accepts_a_correct_store(autojump_clock: trio.testing.MockClock) -> None:
    """A store whose operations take effect inside their intervals is linearizable, even
    with lost replies (unknown outcomes)."""
    store = RegisterStore(rng=random.Random(3), lose_reply_every=17)
    recorder = await _run_register(store, seed=3)
    entries = recorder.entries()
    assert len(entries) > 1000
    assert any(e.outcome is Outcome.UNKNOWN for e in entries)
    report = check_linearizable(entries)
    assert report.linearizable, report.summary()
    assert report.keys == 3


async def test_checker_catches_injected_stale_reads(autojump_clock: trio.testing.MockClock) -> None:
    """The same workload against a store serving reads from a replica 20 ms behind: the
    recorded history is not linearizable, and the report names the stale read."""
    store = RegisterStore(rng=random.Random(4), read_lag_ns=20_000_000)
    recorder = await _run_register(store, seed=4)
    report = check_linearizable(recorder.entries())
    assert not report.linearizable
    assert report.failures and "get(" in report.failures[0].explanation
