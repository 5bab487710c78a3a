"""A linearizability checker for a map of registers (put / get / compare-and-set).

The search is Wing & Gong's, with the two improvements that make it usable on real
histories (Lowe, "Testing for linearizability", 2017; porcupine): *just-in-time*
linearization over a doubly linked list of call/return events, and memoisation of
``(set of linearized operations, register state)`` so that no configuration is explored
twice. Registers are independent, so the history is checked key by key
(P-compositionality, Horn & Kroening 2015): one search per key instead of one over all.

Outcomes follow Jepsen/Knossos:

* ``OK``: the operation took effect exactly once between its invocation and completion and
  returned ``result``.
* ``FAIL``: the operation definitely never took effect; it is dropped.
* ``UNKNOWN`` (timeout, crash): a write or CAS may have taken effect at any point after
  its invocation, or never. It is given a completion time of infinity and may be
  linearized anywhere after its invocation; being linearized after every observed
  operation is indistinguishable from never taking effect. An unknown read observes
  nothing and is dropped.

Two operations are ordered only when one completed strictly before the other was invoked;
equal timestamps count as concurrent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consensus.sim.kv import Op


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation as the client saw it."""

    id: int
    client: int
    op: Op
    key: str
    value: int | None = None
    """PUT: the value written; CAS: the value to install."""
    expected: int | None = None
    """CAS: the value the register must hold for the swap."""
    invoke_us: int
    complete_us: int | None = None
    """None while pending or when the outcome is unknown."""
    outcome: Outcome = Outcome.UNKNOWN
    result: int | bool | None = None
    """GET: the value read (None = absent). CAS: whether it swapped. PUT: None."""

    def describe(self) -> str:
        match self.op:
            case Op.PUT:
                what = f"put({self.key}={self.value})"
            case Op.GET:
                what = f"get({self.key})"
            case Op.CAS:
                what = f"cas({self.key}: {self.expected}->{self.value})"
        end = "inf" if self.complete_us is None else str(self.complete_us)
        returned = f" -> {self.result}" if self.outcome is Outcome.OK else ""
        return (
            f"op#{self.id} client {self.client} {what} {self.outcome.value}{returned} "
            f"[{self.invoke_us}, {end}]"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyResult:
    key: str
    linearizable: bool
    inconclusive: bool = False
    """The search hit its budget before deciding."""
    operations: int = 0
    explored: int = 0
    counterexample: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    keys: tuple[KeyResult, ...]

    @property
    def linearizable(self) -> bool:
        return all(k.linearizable for k in self.keys)

    @property
    def inconclusive(self) -> tuple[str, ...]:
        return tuple(k.key for k in self.keys if k.inconclusive)

    @property
    def failures(self) -> tuple[KeyResult, ...]:
        return tuple(k for k in self.keys if not k.linearizable)


_INF = float("inf")


def _step(state: int | None, op: Operation) -> tuple[bool, int | None]:
    """The register model: whether ``op`` may take effect in ``state``, and the state after."""
    if op.outcome is Outcome.UNKNOWN:
        # Any result is acceptable: a PUT always lands, a CAS lands iff it matches.
        if op.op is Op.PUT:
            return True, op.value
        if op.op is Op.CAS:
            return True, op.value if state == op.expected else state
        return True, state
    match op.op:
        case Op.PUT:
            return True, op.value
        case Op.GET:
            return state == op.result, state
        case Op.CAS:
            if op.result:
                return state == op.expected, op.value
            return state != op.expected, state


def _relevant(op: Operation) -> bool:
    if op.outcome is Outcome.FAIL:
        return False
    return not (op.outcome is Outcome.UNKNOWN and op.op is Op.GET)


def check_key(
    key: str, operations: Sequence[Operation], *, max_steps: int = 2_000_000
) -> KeyResult:
    """Is the history of one register linearizable? Starts from an absent key."""
    ops = [op for op in operations if _relevant(op)]
    for op in ops:
        if op.outcome is Outcome.OK and op.complete_us is None:
            raise ValueError(f"{op.describe()} is OK but has no completion time")
    n = len(ops)
    required = sum(1 for op in ops if op.outcome is Outcome.OK)
    if required == 0:
        return KeyResult(key=key, linearizable=True, operations=n)

    # Events sorted by time, calls before returns at equal times (concurrency), then by op.
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke_us, 0, i))
        end = _INF if op.complete_us is None or op.outcome is Outcome.UNKNOWN else op.complete_us
        events.append((end, 1, i))
    events.sort()
    size = len(events)
    head = size  # sentinel node
    nxt = [*range(1, size + 1), -1]
    prv = [head, *range(0, size - 1), size - 1]
    nxt[head] = 0 if size else -1
    is_call = [kind == 0 for _, kind, _ in events]
    op_of = [i for _, _, i in events]
    match_of = [0] * size
    call_pos = [0] * n
    for pos, (_, kind, i) in enumerate(events):
        if kind == 0:
            call_pos[i] = pos
    for pos, (_, kind, i) in enumerate(events):
        if kind == 1:
            match_of[call_pos[i]] = pos
    nxt[size - 1] = -1

    def lift(pos: int) -> None:
        nxt[prv[pos]] = nxt[pos]
        if nxt[pos] != -1:
            prv[nxt[pos]] = prv[pos]
        ret = match_of[pos]
        nxt[prv[ret]] = nxt[ret]
        if nxt[ret] != -1:
            prv[nxt[ret]] = prv[ret]

    def unlift(pos: int) -> None:
        ret = match_of[pos]
        nxt[prv[ret]] = ret
        if nxt[ret] != -1:
            prv[nxt[ret]] = ret
        nxt[prv[pos]] = pos
        if nxt[pos] != -1:
            prv[nxt[pos]] = pos

    must = [op.outcome is Outcome.OK for op in ops]
    cache: set[tuple[int, int | None]] = set()
    stack: list[tuple[int, int | None]] = []
    state: int | None = None
    linearized = 0
    remaining = required
    entry = nxt[head]
    steps = 0
    best_depth = -1
    best: tuple[list[int], int | None, int] = ([], None, -1)

    while remaining:
        steps += 1
        if steps > max_steps:
            return KeyResult(
                key=key, linearizable=True, inconclusive=True, operations=n, explored=steps
            )
        if entry == -1:  # cannot happen while an OK op is pending; defensive
            break
        if is_call[entry]:
            i = op_of[entry]
            legal, new_state = _step(state, ops[i])
            if legal:
                new_lin = linearized | (1 << i)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    if must[i]:
                        remaining -= 1
                    lift(entry)
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
            continue
        # A return event: its operation had to be linearized by now and was not.
        if len(stack) > best_depth:
            best_depth = len(stack)
            best = ([op_of[pos] for pos, _ in stack], state, op_of[entry])
        if not stack:
            break
        entry, state = stack.pop()
        i = op_of[entry]
        linearized &= ~(1 << i)
        if must[i]:
            remaining += 1
        unlift(entry)
        entry = nxt[entry]
    else:
        return KeyResult(key=key, linearizable=True, operations=n, explored=steps)

    order, at_state, blocked = best
    tail = order[-5:]
    lines = [
        f"key {key!r}: no linearization of {n} operations "
        f"(longest linearizable prefix: {len(order)} operations).",
        f"  register state after the prefix: {at_state}",
        f"  last operations of the prefix ({len(tail)} of {len(order)}):",
        *(f"    {ops[i].describe()}" for i in tail),
    ]
    if blocked >= 0:
        lines.append(f"  must take effect next but cannot: {ops[blocked].describe()}")
    return KeyResult(
        key=key,
        linearizable=False,
        operations=n,
        explored=steps,
        counterexample="\n".join(lines),
    )


def check_history(
    operations: Iterable[Operation], *, max_steps_per_key: int = 2_000_000
) -> CheckResult:
    """Check every key separately (registers compose: P-compositionality)."""
    by_key: dict[str, list[Operation]] = {}
    for op in operations:
        by_key.setdefault(op.key, []).append(op)
    return CheckResult(
        keys=tuple(
            check_key(key, by_key[key], max_steps=max_steps_per_key) for key in sorted(by_key)
        )
    )
