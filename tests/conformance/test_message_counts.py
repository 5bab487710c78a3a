"""Messages per committed entry in steady state, measured on both backends.

A 3-node and a 5-node group, leader elected and settled, then K entries proposed:

* ``seq-idle``: one at a time, each committed at the leader *and known to every follower*
  before the next is proposed (nothing else to piggyback on);
* ``seq-b2b``: one at a time, the next proposed as soon as the leader committed the
  previous one (back to back), the last one's commit then spread to every follower;
* ``batch``: K proposals between two ``ready()`` calls, then everything committed everywhere.

Only messages the entries cause are counted: time does not pass, except that when followers
still lack the commit point once the network is quiet, the leader is ticked (one heartbeat
round per tick) until they have it -- that is how Multi-Paxos spreads it (consensus.paxos,
"commit notification piggybacked on the next Accept or heartbeat"); Raft sends an extra
append on commit instead (RaftCore._after_leader_commit; ``_flush`` sends it at the next
``ready()``). Periodic heartbeats that would flow anyway are otherwise not counted.
``pytest -s`` prints the table; its ``to-commit`` column counts what was delivered (FIFO) from
a proposal until the leader committed it, which in ``seq-b2b`` includes the previous entry's
trailing messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from consensus.api import Proposed

from .harness import BACKENDS, CheckedCluster

K = 20
SIZES = (3, 5)
MODES = ("seq-idle", "seq-b2b", "batch")


@dataclass(frozen=True)
class Measurement:
    backend: str
    nodes: int
    mode: str
    to_leader_commit: Counter[str]
    total: Counter[str]
    heartbeat_ticks: int

    def per_entry(self, counter: Counter[str]) -> float:
        return sum(counter.values()) / K


def _everyone_committed(c: CheckedCluster, index: int) -> bool:
    return all(c.commit_index(n) >= index for n in c.nodes)


def _spread_commit(c: CheckedCluster, index: int) -> int:
    """Deliver until quiet; tick the leader until every follower knows ``index`` is
    committed. Returns the heartbeat ticks needed."""
    ticks = 0
    c.deliver_all()
    while not _everyone_committed(c, index):
        ticks += 1
        if ticks > 10:
            raise c.fail(f"commit point {index} never reached the followers")
        c.tick(1)
        c.deliver_all()
    return ticks


def _until_leader_commits(c: CheckedCluster, index: int) -> None:
    c.process(1)
    while c.commit_index(1) < index:
        if not c.deliver_one():
            raise c.fail(f"entry {index} never committed")


def measure(backend: str, nodes: int, mode: str) -> Measurement:
    c = CheckedCluster(nodes, backend=backend)
    c.elect(1)
    c.settle(3)
    c.kinds_delivered.clear()
    leader_part: Counter[str] = Counter()
    ticks = 0
    last: Proposed | None = None
    if mode == "batch":
        proposals = [c.core(1).propose(b"entry-%02d" % i) for i in range(K)]
        last = proposals[-1]
        _until_leader_commits(c, last.index)
        leader_part = Counter(c.kinds_delivered)
    else:
        for i in range(K):
            before = Counter(c.kinds_delivered)
            last = c.core(1).propose(b"entry-%02d" % i)
            _until_leader_commits(c, last.index)
            leader_part += Counter(c.kinds_delivered) - before
            if mode == "seq-idle":
                ticks += _spread_commit(c, last.index)
    assert last is not None
    ticks += _spread_commit(c, last.index)
    assert c.proposal_succeeded(last) is True
    assert all(len(c.applied(n)) == K for n in c.nodes)
    return Measurement(backend, nodes, mode, leader_part, Counter(c.kinds_delivered), ticks)


def table(results: list[Measurement]) -> str:
    lines = [
        f"messages per committed entry (K={K}; leader ticked only to spread the commit point)",
        f"{'backend':<7} {'n':>2} {'mode':<9} {'to-commit':>9} {'total':>6} {'hb-ticks':>8}  "
        "by kind (total / K)",
    ]
    for m in results:
        kinds = ", ".join(f"{k} {v / K:.2f}" for k, v in sorted(m.total.items()))
        lines.append(
            f"{m.backend:<7} {m.nodes:>2} {m.mode:<9} {m.per_entry(m.to_leader_commit):>9.2f} "
            f"{m.per_entry(m.total):>6.2f} {m.heartbeat_ticks:>8}  {kinds}"
        )
    return "\n".join(lines)


def batch_bound(nodes: int) -> int:
    """A batch costs one round trip carrying every entry plus one round spreading the commit
    point: 4(n-1) messages in all, whatever K (Paxos: one Accept per peer per Ready; Raft:
    one AppendEntries per follower per Ready, ``RaftCore._flush``)."""
    return 4 * (nodes - 1)


def upper_bound(nodes: int) -> float:
    """One round trip to every follower per entry, plus one more round to spread the commit
    point where nothing else carries it: 2(n-1) messages per round."""
    return 2 * 2 * (nodes - 1)


@pytest.mark.parametrize("nodes", SIZES)
@pytest.mark.parametrize("mode", MODES)
def test_messages_per_committed_entry_are_bounded(backend: str, nodes: int, mode: str) -> None:
    """Steady state costs at most one round trip per follower per entry, plus one round to
    spread the commit point (Raft §5.3; Paxos Made Simple §3 phase 2 only); a leader commits
    after a quorum of acks, before hearing from every follower."""
    m = measure(backend, nodes, mode)
    assert m.per_entry(m.total) <= upper_bound(nodes), table([m])
    assert m.per_entry(m.to_leader_commit) <= m.per_entry(m.total)
    assert m.per_entry(m.total) >= (2 * (nodes - 1) / K if mode == "batch" else 2 * (nodes - 1))


@pytest.mark.parametrize("nodes", SIZES)
def test_a_batch_costs_one_round_trip_plus_one_commit_round(backend: str, nodes: int) -> None:
    """K proposals between two ready() calls leave as one replication message per follower
    (Raft §5.3: an AppendEntries carries any number of entries; Paxos Made Simple §3: one
    phase 2 message may cover many instances), and the leader commits after one message to
    each follower and the first ack; the commit point then costs one more round."""
    m = measure(backend, nodes, "batch")
    assert sum(m.total.values()) <= batch_bound(nodes), table([m])
    # one message to each follower, then acks from a quorum less the leader itself
    assert sum(m.to_leader_commit.values()) <= (nodes - 1) + nodes // 2, table([m])


def test_print_message_count_table() -> None:
    """The full table (``pytest -s`` shows it)."""
    results = [
        measure(backend, nodes, mode) for backend in BACKENDS for nodes in SIZES for mode in MODES
    ]
    text = table(results)
    print("\n" + text)
    assert len(text.splitlines()) == 2 + len(BACKENDS) * len(SIZES) * len(MODES)


TAILS = (0, 50)


@dataclass(frozen=True)
class LeaderChange:
    backend: str
    tail: int
    messages: Counter[str]
    entries_carried: int


def measure_leader_change(backend: str, tail: int) -> LeaderChange:
    """3 nodes; the leader commits ``tail`` entries (followers hold them, and learn the
    commit point only as each backend spreads it with no time passing), then crashes. Counted:
    everything delivered until the new leader has committed one new proposal."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    for i in range(tail):
        c.core(1).propose(b"tail-%02d" % i)
    c.process(1)
    c.deliver_all()
    c.crash(1)
    c.kinds_delivered.clear()
    c.entries_delivered = 0
    leader = c.wait_for_leader()
    proposed = c.propose(leader, b"first-of-new-leader")
    for _ in range(20):
        if c.proposal_succeeded(proposed):
            break
        c.run(1)
    assert c.proposal_succeeded(proposed) is True
    return LeaderChange(backend, tail, Counter(c.kinds_delivered), c.entries_delivered)


@pytest.mark.parametrize("tail", TAILS)
def test_leader_change_work_is_bounded_by_the_tail(backend: str, tail: int) -> None:
    """Recovery after a leader crash: Raft §5.4.2 / §8 (no-op of the new term, backtracking)
    and Paxos Made Simple §3 (phase 1 over every slot above the commit point, re-proposal).
    Neither backend moves more than a few copies of the uncommitted tail."""
    m = measure_leader_change(backend, tail)
    assert m.entries_carried <= 4 * tail + 4
    assert sum(m.messages.values()) <= 30


def test_print_leader_change_table() -> None:
    """Work on leader change (``pytest -s`` shows it)."""
    lines = [
        "leader change, 3 nodes: messages and log entries carried until the new leader "
        "commits its first proposal"
    ]
    for backend in BACKENDS:
        for tail in TAILS:
            m = measure_leader_change(backend, tail)
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(m.messages.items()))
            lines.append(
                f"{backend:<6} tail={tail:<3} messages={sum(m.messages.values()):<3} "
                f"entries={m.entries_carried:<4} {kinds}"
            )
    print("\n" + "\n".join(lines))
    assert len(lines) == 1 + len(BACKENDS) * len(TAILS)
