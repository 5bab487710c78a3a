"""Leader election: phase 1 once for all slots, pre-check, check-quorum, backoff
(Paxos Made Simple §3, Paxos Made Live §2.2)."""

from __future__ import annotations

from consensus.api import Role
from consensus.paxos import ballot_node, ballot_round, make_ballot
from consensus.paxos.messages import Accept, Nack, NackReason, Prepare
from consensus.types import Index, NodeId

from .harness import bodies, cluster, core, drain, envelope


def test_campaign_elects_with_one_phase1_and_steady_state_is_phase2_only() -> None:
    """PMS §3: the leader runs phase 1 once, for all slots above its commit point; later
    proposals need only phase 2 (Accept), no further Prepare."""
    c = cluster(3)
    c.core(1).campaign()
    sent = c.take_messages()  # PreCheck round
    c.network.extend(sent)
    c.deliver_all()
    st = c.core(1).status()
    assert st.role is Role.LEADER and st.leader == 1
    assert st.term == make_ballot(1, NodeId(1))
    for i in range(5):
        c.propose(1, b"v%d" % i)
    in_flight = c.take_messages()
    assert in_flight and all(isinstance(m.body, Accept) for m in in_flight)
    c.network.extend(in_flight)
    c.deliver_all()
    c.run(2)
    for n in (1, 2, 3):
        assert c.applied(n) == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_election_logs_role_changes_with_the_ballot() -> None:
    """Role changes are logged at info level with the ballot."""
    c = cluster(3)
    c.elect(1)
    assert "1 became_leader ballot=1.1 commit=0 recovered_through=0" in c.log_lines
    assert any(line.startswith("1 phase1_started ballot=1.1") for line in c.log_lines)


def test_followers_elect_a_leader_after_the_randomized_timeout() -> None:
    """With no leader, some voter times out in [T, 2T) ticks and wins; exactly one leads."""
    c = cluster(3, seed=7)
    c.run(25)
    leaders = [n for n in (1, 2, 3) if c.core(n).status().role is Role.LEADER]
    assert len(leaders) == 1
    assert {c.core(n).status().leader for n in (1, 2, 3)} == {leaders[0]}


def test_partitioned_node_cannot_disrupt_a_healthy_leader() -> None:
    """Pre-check (PreVote analogue): an isolated node keeps failing its pre-check, so it never
    raises its ballot; after healing, the leader and its ballot are unchanged."""
    c = cluster(3, seed=3)
    c.elect(1)
    ballot = c.core(1).status().term
    c.isolate(3)
    c.run(60)
    assert c.core(3).status().term == ballot
    c.heal()
    c.run(5)
    assert c.leader() == 1 and c.core(1).status().term == ballot


def test_without_pre_check_a_partitioned_node_raises_its_ballot() -> None:
    """The contrast that motivates the pre-check: without it the isolated node's ballot
    climbs on every timeout."""
    c = cluster(3, seed=3, pre_vote=False)
    c.elect(1)
    ballot = c.core(1).status().term
    c.isolate(3)
    c.run(60)
    assert ballot_round(c.core(3).status().term) > ballot_round(ballot) + 1


def test_leader_without_a_quorum_steps_down() -> None:
    """Check-quorum: a leader that hears from no quorum for an election timeout steps down."""
    c = cluster(3, election_timeout_ticks=10)
    c.elect(1)
    c.isolate(1)
    c.run(10)
    assert c.core(1).status().role is Role.LEADER
    c.run(10)
    assert c.core(1).status().role is Role.FOLLOWER


def test_leader_failure_elects_a_new_leader_that_keeps_the_chosen_values() -> None:
    """PMS §2.2: values chosen under one leader stay chosen under the next."""
    c = cluster(3, seed=11)
    c.elect(1)
    for i in range(3):
        c.propose(1, b"a%d" % i)
    c.deliver_all()
    c.run(2)
    c.crash(1)
    c.run(40)
    new = c.leader()
    assert new in (2, 3)
    c.propose(new, b"b")
    c.deliver_all()
    c.run(3)
    for n in (2, 3):
        assert c.applied(n) == [b"a0", b"a1", b"a2", b"b"]
    c.check_consistent()


def test_nack_makes_a_candidate_abandon_and_outbid_next_time() -> None:
    """PMS §3: a proposer that learns of a higher ballot abandons; its next ballot is above
    the one it learned about."""
    c = core(1, pre_vote=False)
    c.campaign()
    rd = drain(c)
    (prepare,) = bodies(rd, Prepare, dst=2)
    higher = make_ballot(5, NodeId(2))
    c.step(
        envelope(
            2,
            1,
            Nack(
                ballot=prepare.ballot,
                promised=higher,
                reason=NackReason.HIGHER_BALLOT,
                commit=Index(0),
            ),
        )
    )
    assert c.status().role is Role.FOLLOWER
    c.campaign()
    (again,) = bodies(drain(c), Prepare, dst=2)
    assert ballot_round(again.ballot) == 6 and ballot_node(again.ballot) == 1


def test_duelling_proposers_converge() -> None:
    """PMS §3 / PML §2.2: two proposers outbidding each other eventually stop, thanks to the
    randomized backoff; one leader emerges and serves."""
    for seed in range(5):
        c = cluster(3, seed=seed, pre_vote=False, check_quorum=False)
        c.core(1).campaign()
        c.core(2).campaign()
        c.core(3).campaign()
        c.deliver_all()
        for _ in range(60):
            c.run(1)
            if c.leader() is not None:
                break
        leader = c.leader()
        assert leader is not None, f"seed {seed}: no leader"
        c.propose(leader, b"x")
        c.deliver_all()
        c.run(2)
        assert all(c.applied(n) == [b"x"] for n in (1, 2, 3)), f"seed {seed}"


def test_single_voter_elects_itself_and_commits_alone() -> None:
    """A quorum of one: campaign and commit need no messages."""
    c = cluster(1)
    c.elect(1)
    c.propose(1, b"solo")
    assert c.applied(1) == [b"solo"]
