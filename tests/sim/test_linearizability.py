"""The register linearizability checker, on hand-made histories and against brute force.

Reference: Herlihy & Wing 1990 (definition); Lowe 2017 and porcupine (JIT search with
memoisation); Jepsen/Knossos (unknown outcomes).
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.sim.kv import Op
from consensus.sim.linearizability import Operation, Outcome, check_history, check_key

_ids = itertools.count(1)


def put(
    key: str, value: int, start: int, end: int | None, outcome: Outcome = Outcome.OK
) -> Operation:
    return Operation(
        id=next(_ids), client=0, op=Op.PUT, key=key, value=value,
        invoke_us=start, complete_us=end, outcome=outcome,
    )  # fmt: skip


def get(
    key: str, result: int | None, start: int, end: int | None, outcome: Outcome = Outcome.OK
) -> Operation:
    return Operation(
        id=next(_ids), client=1, op=Op.GET, key=key,
        invoke_us=start, complete_us=end, outcome=outcome, result=result,
    )  # fmt: skip


def cas(
    key: str, expected: int | None, value: int, ok: bool | None, start: int, end: int | None,
    outcome: Outcome = Outcome.OK,
) -> Operation:  # fmt: skip
    return Operation(
        id=next(_ids), client=2, op=Op.CAS, key=key, value=value, expected=expected,
        invoke_us=start, complete_us=end, outcome=outcome, result=ok,
    )  # fmt: skip


def test_sequential_history_is_linearizable() -> None:
    """A history with no overlap is linearizable iff it is legal in real-time order."""
    history = [put("a", 1, 0, 1), get("a", 1, 2, 3), cas("a", 1, 2, True, 4, 5), get("a", 2, 6, 7)]
    assert check_history(history).linearizable


def test_read_of_absent_key_returns_none() -> None:
    """Registers start absent: a first read observing None is legal, observing 1 is not."""
    assert check_history([get("a", None, 0, 1)]).linearizable
    assert not check_history([get("a", 1, 0, 1)]).linearizable


def test_stale_read_is_caught() -> None:
    """A read that starts after a write completed must not return the older value."""
    history = [put("a", 1, 0, 1), put("a", 2, 2, 3), get("a", 1, 4, 5)]
    result = check_history(history)
    assert not result.linearizable
    failure = result.failures[0]
    assert "get(a)" in failure.counterexample
    assert "'a'" in failure.counterexample


def test_concurrent_read_may_see_either_value() -> None:
    """A read overlapping a write may return the old or the new value."""
    for seen in (1, 2):
        history = [put("a", 1, 0, 1), put("a", 2, 2, 10), get("a", seen, 3, 4)]
        assert check_history(history).linearizable


def test_lost_write_is_caught() -> None:
    """An acknowledged write must be visible to every read that starts after it."""
    history = [put("a", 1, 0, 1), put("a", 2, 2, 3), get("a", 2, 4, 5), get("a", 1, 6, 7)]
    assert not check_history(history).linearizable


def test_lost_cas_is_caught() -> None:
    """A successful CAS takes effect: a later read of the pre-CAS value is illegal."""
    history = [put("a", 1, 0, 1), cas("a", 1, 5, True, 2, 3), get("a", 1, 4, 5)]
    assert not check_history(history).linearizable


def test_cas_success_requires_expected_value() -> None:
    """CAS(1->5) cannot succeed when the register provably holds 2."""
    history = [put("a", 2, 0, 1), cas("a", 1, 5, True, 2, 3)]
    assert not check_history(history).linearizable


def test_failed_cas_requires_a_mismatch() -> None:
    """A CAS that reports "no swap" while the register holds the expected value is illegal."""
    assert not check_history([put("a", 1, 0, 1), cas("a", 1, 5, False, 2, 3)]).linearizable
    assert check_history([put("a", 2, 0, 1), cas("a", 1, 5, False, 2, 3)]).linearizable


def test_unknown_write_may_take_effect_late() -> None:
    """An unknown write may take effect any time after its invocation (Knossos :info)."""
    history = [
        put("a", 1, 0, 1),
        put("a", 2, 2, None, Outcome.UNKNOWN),
        get("a", 1, 10, 11),
        get("a", 2, 20, 21),
    ]
    assert check_history(history).linearizable


def test_unknown_write_may_never_take_effect() -> None:
    """An unknown write may also never take effect."""
    history = [put("a", 1, 0, 1), put("a", 2, 2, None, Outcome.UNKNOWN), get("a", 1, 50, 51)]
    assert check_history(history).linearizable


def test_unknown_write_cannot_take_effect_before_invocation() -> None:
    """Even an unknown write has an invocation time: a read before it cannot see it."""
    history = [get("a", 2, 0, 1), put("a", 2, 5, None, Outcome.UNKNOWN)]
    assert not check_history(history).linearizable


def test_unknown_write_takes_effect_at_most_once() -> None:
    """Once overwritten, an unknown write's value cannot reappear (it happened once)."""
    history = [
        put("a", 2, 0, None, Outcome.UNKNOWN),
        get("a", 2, 1, 2),
        put("a", 3, 3, 4),
        get("a", 2, 5, 6),
    ]
    assert not check_history(history).linearizable


def test_unknown_cas_resolves_both_ways() -> None:
    """An unknown CAS may swap (if the value matches when it lands) or not."""
    base = [put("a", 1, 0, 1), cas("a", 1, 7, None, 2, None, Outcome.UNKNOWN)]
    assert check_history([*base, get("a", 7, 5, 6)]).linearizable
    assert check_history([*base, get("a", 1, 5, 6)]).linearizable
    assert not check_history([*base, get("a", 9, 5, 6)]).linearizable


def test_failed_operations_never_take_effect() -> None:
    """A definitely failed write must not be observed."""
    history = [put("a", 1, 0, 1), put("a", 2, 2, 3, Outcome.FAIL), get("a", 2, 4, 5)]
    assert not check_history(history).linearizable


def test_keys_are_checked_independently() -> None:
    """P-compositionality: a violation on one key is reported for that key only."""
    history = [put("a", 1, 0, 1), get("a", 1, 2, 3), put("b", 1, 0, 1), get("b", 9, 2, 3)]
    result = check_history(history)
    assert [k.key for k in result.failures] == ["b"]


def test_many_concurrent_writers_search_stays_cheap() -> None:
    """Memoisation keeps a wide, linearizable history cheap to check."""
    history = [put("a", v, 0, 100) for v in range(1, 16)]
    history += [get("a", 15, 101, 102), put("a", 99, 103, None, Outcome.UNKNOWN)]
    history += [get("a", 99, 200 + i, 201 + i) for i in range(0, 20, 2)]
    result = check_key("a", history)
    assert result.linearizable
    assert not result.inconclusive


def test_budget_exhaustion_is_reported_as_inconclusive() -> None:
    """A search cut short says so instead of claiming a verdict."""
    history = [put("a", v, 0, 100) for v in range(1, 12)] + [get("a", 12, 101, 102)]
    result = check_key("a", history, max_steps=10)
    assert result.inconclusive


# --------------------------------------------------------------------------- oracle


def brute_force(ops: list[Operation]) -> bool:
    """Try every subset of unknown writes and every ordering that respects real time."""
    relevant = [
        o for o in ops
        if o.outcome is not Outcome.FAIL and not (o.outcome is Outcome.UNKNOWN and o.op is Op.GET)
    ]  # fmt: skip
    certain = [o for o in relevant if o.outcome is Outcome.OK]
    unknown = [o for o in relevant if o.outcome is Outcome.UNKNOWN]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            for order in itertools.permutations([*certain, *chosen]):
                if _respects_real_time(order) and _legal(order):
                    return True
    return False


def _respects_real_time(order: tuple[Operation, ...]) -> bool:
    for i, later in enumerate(order):
        for earlier in order[i + 1 :]:
            # ``earlier`` is placed after ``later`` yet completed before it was invoked.
            if (
                earlier.complete_us is not None
                and earlier.outcome is Outcome.OK
                and earlier.complete_us < later.invoke_us
            ):
                return False
    return True


def _legal(order: tuple[Operation, ...]) -> bool:
    state: int | None = None
    for o in order:
        if o.op is Op.PUT:
            state = o.value
        elif o.op is Op.GET:
            if state != o.result:
                return False
        elif o.outcome is Outcome.UNKNOWN:
            if state == o.expected:
                state = o.value
        elif o.result:
            if state != o.expected:
                return False
            state = o.value
        elif state == o.expected:
            return False
    return True


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    count = draw(st.integers(min_value=1, max_value=6))
    values = st.one_of(st.none(), st.integers(min_value=1, max_value=3))
    ops: list[Operation] = []
    for i in range(count):
        kind = draw(st.sampled_from([Op.PUT, Op.GET, Op.CAS]))
        start = draw(st.integers(min_value=0, max_value=20))
        length = draw(st.integers(min_value=0, max_value=10))
        outcome = draw(
            st.sampled_from([Outcome.OK, Outcome.OK, Outcome.OK, Outcome.UNKNOWN, Outcome.FAIL])
        )
        end = None if outcome is Outcome.UNKNOWN else start + length
        value = draw(st.integers(min_value=1, max_value=3))
        result: int | bool | None = None
        if kind is Op.GET:
            result = draw(values)
        elif kind is Op.CAS and outcome is Outcome.OK:
            result = draw(st.booleans())
        ops.append(
            Operation(
                id=i, client=i, op=kind, key="k",
                value=None if kind is Op.GET else value,
                expected=draw(values) if kind is Op.CAS else None,
                invoke_us=start, complete_us=end, outcome=outcome, result=result,
            )
        )  # fmt: skip
    return ops


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_checker_agrees_with_brute_force(ops: list[Operation]) -> None:
    """The JIT search with memoisation decides exactly what exhaustive search decides."""
    assert check_key("k", ops).linearizable == brute_force(ops)
