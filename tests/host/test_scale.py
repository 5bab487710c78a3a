"""Idle groups cost nothing per tick: the point of quiescence for a node with thousands of
mostly idle ranges (CockroachDB's motivation)."""

from __future__ import annotations

from consensus.types import GroupId

from .driver import HostCluster

N_GROUPS = 1000


def test_thousand_quiesced_groups_are_not_touched_by_tick() -> None:
    """1,000 groups (both backends) on 3 hosts, all quiesced: 50 ticks tick no core, leave
    no group dirty (each loop's HostReady carries no group), and send only one
    NodeHeartbeat per node pair every node_heartbeat_ticks."""
    groups = {g: ("raft" if g % 2 else "paxos") for g in range(1, N_GROUPS + 1)}
    c = HostCluster(groups=groups, seed=1)
    c.elect_all(1)
    c.run_until(c.all_quiesced, max_ticks=10)
    before = {n.node_id: n.host.statistics() for n in c.live()}
    c.sent.clear()
    for _ in range(50):
        for node in c.live():
            node.host.tick()
            hr = node.host.ready()
            assert hr.groups == ()
            assert all(m.group_id == 0 for _, messages in hr.messages for m in messages)
            c.carry_out(node, hr)
            node.host.advance(hr)
        c.deliver_all()
    assert dict(c.sent) == {"host.NodeHeartbeat": 3 * 2 * 25}
    for node in c.live():
        stats = node.host.statistics()
        assert stats.group_ticks == before[node.node_id].group_ticks
        assert stats.ticks == before[node.node_id].ticks + 50
        assert (stats.awake_groups, stats.quiesced_groups) == (0, N_GROUPS)
    # And one of them still works on demand.
    c.propose(500, b"still alive")
    c.run_until(lambda: c.applied_everywhere(500, b"still alive"), max_ticks=5)
    assert c.host(1).statistics().awake_groups == 1
    assert c.host(1).is_quiesced(GroupId(499))
