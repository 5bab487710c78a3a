"""Quiescence: idle groups stop ticking and stop sending per-group heartbeats, and wake on
activity (CockroachDB's quiescence, adapted). Every claim is checked for both backends."""

from __future__ import annotations

import pytest

from consensus.api import ChangeKind, ChangeOp, MembershipChange, Role
from consensus.host import HOST_GROUP, NodeHeartbeat, Quiesce, Unquiesce
from consensus.types import GroupId, Index, Message, NodeId, Term

from .driver import HostCluster, kind_of

BACKENDS = ["raft", "paxos"]
GROUPS = range(1, 11)
ACK_KINDS = {
    "raft.HeartbeatResponse",
    "raft.AppendEntriesResponse",
    "paxos.HeartbeatAck",
    "paxos.Accepted",
}


def busy_then_idle(backend: str, *, seed: int = 0) -> HostCluster:
    """3 hosts x 10 groups of ``backend``: elect naturally, commit one command per group,
    then run until every group is quiesced on every host."""
    c = HostCluster(groups={g: backend for g in GROUPS}, seed=seed)
    c.run_until(lambda: all(c.leader(g) is not None for g in GROUPS), max_ticks=200)
    for g in GROUPS:
        c.propose(g, f"cmd{g}".encode())
    c.run_until(
        lambda: all(c.applied_everywhere(g, f"cmd{g}".encode()) for g in GROUPS), max_ticks=20
    )
    return c


@pytest.mark.parametrize("backend", BACKENDS)
def test_idle_groups_quiesce_then_only_node_heartbeats_flow(backend: str) -> None:
    """Once proposals stop, every group quiesces within a few ticks; the next 100 ticks
    send nothing but the coalesced NodeHeartbeat (one per node pair every 2 ticks) and tick
    no core at all."""
    c = busy_then_idle(backend)
    took = c.run_until(c.all_quiesced, max_ticks=5)
    assert took <= 5
    c.sent.clear()
    group_ticks = c.group_ticks()
    c.run(100)
    # 3 hosts x 2 peers x (100 ticks / node_heartbeat_ticks=2)
    assert dict(c.sent) == {"host.NodeHeartbeat": 300}
    assert c.group_ticks() == group_ticks
    for node in c.live():
        stats = node.host.statistics()
        assert (stats.awake_groups, stats.quiesced_groups) == (0, 10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_proposal_wakes_only_its_group_commits_and_requiesces(backend: str) -> None:
    c = busy_then_idle(backend, seed=1)
    c.run_until(c.all_quiesced, max_ticks=5)
    leader = c.leader(3)
    assert leader is not None
    c.propose(3, b"wake up")
    assert c.host(leader).statistics().awake_groups == 1
    assert not c.host(leader).is_quiesced(GroupId(3))
    c.run_until(lambda: c.applied_everywhere(3, b"wake up"), max_ticks=5)
    assert c.leader(3) == leader  # no election: the followers woke on the leader's append
    c.run_until(c.all_quiesced, max_ticks=5)
    c.check_consistent()


@pytest.mark.parametrize("backend", BACKENDS)
def test_message_from_the_leader_wakes_a_quiesced_follower(backend: str) -> None:
    c = busy_then_idle(backend, seed=2)
    c.run_until(c.all_quiesced, max_ticks=5)
    leader = c.leader(4)
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.host(leader).propose(GroupId(4), b"x")
    c.process(leader)
    frame = next(f for f in c.frames if f.dst == follower)
    c.frames.remove(frame)
    c.frames.insert(0, frame)
    c.deliver_one()
    assert not c.host(follower).is_quiesced(GroupId(4))
    assert c.host(follower).statistics().awake_groups == 1  # the others sleep on


@pytest.mark.parametrize("backend", BACKENDS)
def test_late_acknowledgement_does_not_wake_a_quiesced_leader(backend: str) -> None:
    """The answer to the leader's last heartbeat may arrive after it quiesced; it changes
    nothing, so it must not wake the group (else the leader would flap forever)."""
    c = busy_then_idle(backend, seed=3)
    leader = c.leader(5)
    assert leader is not None
    # Capture an acknowledgement from a follower while the group is awake.
    c.propose(5, b"x")
    late: Message | None = None
    while late is None and c.frames:
        frame = c.frames[0]
        late = next(
            (
                m
                for m in frame.messages
                if m.group_id == 5 and m.dst == leader and kind_of(m) in ACK_KINDS
            ),
            None,
        )
        c.deliver_one()
    assert late is not None
    c.run_until(c.all_quiesced, max_ticks=5)
    c.host(leader).step(late)
    assert c.host(leader).is_quiesced(GroupId(5))
    assert not c.host(leader).has_ready()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lost_quiesce_heals_without_a_leader_change(backend: str) -> None:
    """If a follower never gets the Quiesce, it keeps ticking and eventually campaigns; the
    campaign wakes the leader, whose heartbeats bring the follower back, and the group
    quiesces again -- with the same leader and term (PreVote / pre-check: the follower's
    attempt never raises anyone's term, Raft thesis §9.6)."""
    c = busy_then_idle(backend, seed=4)
    leader = c.leader(6)
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    term = c.host(leader).status(GroupId(6)).term
    dropped: list[Message] = []

    def drop_quiesce(m: Message) -> bool:
        hit = isinstance(m.body, Quiesce) and m.body.group_id == 6 and m.dst == follower
        if hit and not dropped:
            dropped.append(m)
            return True
        return False

    c.drop_filter = drop_quiesce
    c.run_until(lambda: bool(dropped) and c.host(leader).is_quiesced(GroupId(6)), max_ticks=5)
    assert not c.host(follower).is_quiesced(GroupId(6))
    c.run_until(c.all_quiesced, max_ticks=60)
    assert c.leader(6) == leader
    assert c.host(leader).status(GroupId(6)).term == term


@pytest.mark.parametrize("backend", BACKENDS)
def test_follower_that_cannot_agree_answers_unquiesce(backend: str) -> None:
    """A follower whose commit index differs from the Quiesce's stays awake and asks the
    leader to keep heartbeating until it has caught up."""
    c = busy_then_idle(backend, seed=5)
    c.run_until(c.all_quiesced, max_ticks=5)
    leader = c.leader(7)
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    host = c.host(follower)
    c.propose(7, b"wake")  # wakes the follower on delivery
    c.deliver_all()
    st = host.status(GroupId(7))
    assert not host.is_quiesced(GroupId(7))
    host.step(
        Message(
            group_id=HOST_GROUP,
            src=NodeId(leader),
            dst=NodeId(follower),
            body=Quiesce(
                group_id=GroupId(7), term=st.term, commit=Index(st.commit + 5), leader=leader
            ),
        )
    )
    assert not host.is_quiesced(GroupId(7))
    hr = host.ready()
    to_leader = dict(hr.messages)[leader]
    assert Unquiesce(group_id=GroupId(7)) in [m.body for m in to_leader]
    host.advance(hr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unquiesce_wakes_the_leader(backend: str) -> None:
    c = busy_then_idle(backend, seed=6)
    c.run_until(c.all_quiesced, max_ticks=5)
    leader = c.leader(8)
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.host(leader).step(
        Message(
            group_id=HOST_GROUP,
            src=NodeId(follower),
            dst=NodeId(leader),
            body=Unquiesce(group_id=GroupId(8)),
        )
    )
    assert not c.host(leader).is_quiesced(GroupId(8))
    c.run_until(c.all_quiesced, max_ticks=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restarted_follower_is_caught_up_by_a_quiesced_leader(backend: str) -> None:
    """A follower that crashes and restarts before anyone suspects it comes back awake
    without knowing the leader; its campaign wakes the (quiesced) leader, which catches it
    up; then the group quiesces again."""
    c = busy_then_idle(backend, seed=7)
    c.run_until(c.all_quiesced, max_ticks=5)
    leader = c.leader(9)
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.crash(follower)
    c.run(2)
    c.propose(9, b"while down")
    c.run(2)
    c.restart(follower)
    c.run_until(lambda: c.applied_everywhere(9, b"while down") and c.all_quiesced(), max_ticks=60)
    assert c.leader(9) == leader
    c.check_consistent()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dead_follower_does_not_keep_groups_awake_and_is_caught_up_on_return(
    backend: str,
) -> None:
    """Members the liveness detector suspects are left out of the idle check, so a dead
    follower costs nothing per tick; when it is heard again, the groups that quiesced
    without it wake and catch it up."""
    c = busy_then_idle(backend, seed=8)
    c.run_until(c.all_quiesced, max_ticks=5)
    dead = 3
    c.crash(dead)
    # Groups node 3 led wake once it is suspected (node_dead_ticks) and elect.
    c.run_until(lambda: all(c.leader(g) is not None for g in GROUPS), max_ticks=60)
    for g in GROUPS:
        c.propose(g, f"late{g}".encode())
    c.run_until(
        lambda: (
            all(c.applied_everywhere(g, f"late{g}".encode()) for g in GROUPS) and c.all_quiesced()
        ),
        max_ticks=10,
    )
    assert all(n.host.suspected_peers() == (dead,) for n in c.live())
    c.restart(dead)
    c.run_until(
        lambda: (
            all(c.applied_everywhere(g, f"late{g}".encode()) for g in GROUPS) and c.all_quiesced()
        ),
        max_ticks=80,
    )
    c.check_consistent()
    assert all(n.host.suspected_peers() == () for n in c.live())


def test_quiesce_disabled_keeps_every_group_ticking() -> None:
    c = HostCluster(groups={1: "raft", 2: "paxos"}, host={"quiesce": False}, seed=9)
    c.run_until(lambda: c.leader(1) is not None and c.leader(2) is not None, max_ticks=100)
    before = c.group_ticks()
    c.run(20)
    assert c.group_ticks() - before == 3 * 2 * 20
    assert all(n.host.statistics().quiesced_groups == 0 for n in c.live())


def test_stale_quiesce_from_a_deposed_leader_is_refused() -> None:
    """A Quiesce naming an older term (a leader that was deposed meanwhile) must not put
    the replica to sleep: it would then never time out against the real situation."""
    c = busy_then_idle("raft", seed=10)
    c.run_until(c.all_quiesced, max_ticks=5)
    leader = c.leader(2)
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.propose(2, b"wake")
    c.deliver_all()
    host = c.host(follower)
    st = host.status(GroupId(2))
    assert st.role is Role.FOLLOWER and not host.is_quiesced(GroupId(2))
    host.step(
        Message(
            group_id=HOST_GROUP,
            src=NodeId(leader),
            dst=NodeId(follower),
            body=Quiesce(
                group_id=GroupId(2), term=Term(st.term - 1), commit=st.commit, leader=leader
            ),
        )
    )
    assert not host.is_quiesced(GroupId(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_added_learner_becomes_a_peer_and_quiesces_with_the_group(backend: str) -> None:
    """Membership comes from each group's configuration: after ADD_LEARNER commits, the
    leader's host counts node 4 as a peer (NodeHeartbeats, liveness), waits for the learner
    to catch up before quiescing (learners' match counts too) and sends it the Quiesce."""
    c = HostCluster(4, groups={1: backend}, voters=[1, 2, 3], seed=11)
    c.elect_all(1)
    assert c.host(1).statistics().peers == 2
    c.propose(1, b"before")
    c.host(1).change_membership(
        GroupId(1), MembershipChange(ops=(ChangeOp(kind=ChangeKind.ADD_LEARNER, node=NodeId(4)),))
    )
    c.run_until(
        lambda: c.host(1).statistics().peers == 3 and c.applied_everywhere(1, b"before"),
        max_ticks=20,
    )
    c.run_until(c.all_quiesced, max_ticks=10)
    assert c.commands(4, 1) == [b"before"]
    c.sent.clear()
    c.run(10)
    assert dict(c.sent) == {"host.NodeHeartbeat": c.sent["host.NodeHeartbeat"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_learner_on_a_silent_new_node_is_caught_up_after_it_joins(backend: str) -> None:
    """A node that hosts nothing beats no peer, and a replica that joins a group (empty
    configuration) knows no member to beat either. If the leader that added such a node
    as a learner suspected it (here: unreachable at first) and quiesced without it, only
    the node's answers to the leader's NodeHeartbeats can clear the suspicion, wake the
    group and catch the learner up. (Regression: the placement driver's moves to a freshly
    joined node stalled forever when its leaders suspected the node before it joined.)"""
    c = HostCluster(4, groups={1: backend}, voters=[1, 2, 3], seed=12)
    c.host(4).remove_group(GroupId(1))  # node 4 starts out hosting nothing
    c.elect_all(1)
    c.propose(1, b"before")
    c.isolate(4)
    c.host(1).change_membership(
        GroupId(1), MembershipChange(ops=(ChangeOp(kind=ChangeKind.ADD_LEARNER, node=NodeId(4)),))
    )
    dead_ticks = c.host_config(NodeId(1)).node_dead_ticks
    c.run_until(
        lambda: c.host(1).suspected_peers() == (NodeId(4),) and c.host(1).is_quiesced(GroupId(1)),
        max_ticks=dead_ticks + 20,
    )
    c.heal()
    c.join(4, 1)
    c.run_until(lambda: c.commands(4, 1) == [b"before"], max_ticks=dead_ticks)
    assert c.host(1).suspected_peers() == ()
    c.run_until(c.all_quiesced, max_ticks=20)


def test_a_node_answers_the_beats_of_a_node_it_does_not_count_as_a_peer() -> None:
    """Only beats from non-peers are answered, and answers never are."""
    c = HostCluster(2, groups={1: "raft"}, seed=13)
    c.host(2).remove_group(GroupId(1))
    host = c.host(2)
    host.step(Message(group_id=HOST_GROUP, src=NodeId(1), dst=NodeId(2), body=NodeHeartbeat()))
    ready = host.ready()
    ((dst, (answer,)),) = ready.messages
    assert (dst, answer.body) == (NodeId(1), NodeHeartbeat(answer=True))
    host.advance(ready)
    host.step(
        Message(group_id=HOST_GROUP, src=NodeId(1), dst=NodeId(2), body=NodeHeartbeat(answer=True))
    )
    assert not host.has_ready()


def test_a_burst_of_late_ticks_does_not_make_a_node_suspect_its_peers() -> None:
    """A late runtime loop delivers its missed ticks at once, before it has taken in what
    its peers sent meanwhile: groups get every tick, the liveness clock only the first
    (``tick(liveness=False)``), so the burst is not counted as the peers' silence."""
    c = HostCluster(3, groups={1: "raft"}, seed=14)
    c.elect_all(1)
    host = c.host(1)
    dead_ticks = c.host_config(NodeId(1)).node_dead_ticks
    ticks_before = host.statistics().ticks
    for _ in range(3 * dead_ticks):
        host.tick(liveness=False)
    assert host.statistics().ticks == ticks_before + 3 * dead_ticks
    assert host.suspected_peers() == ()
    c.isolate(1)
    c.run(dead_ticks)  # the same ticks on the liveness clock: now it is silence
    assert host.suspected_peers() == (NodeId(2), NodeId(3))
