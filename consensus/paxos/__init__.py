"""Multi-Paxos behind the shared ``ConsensusCore`` interface (pure, deterministic).

References: Lamport, "Paxos Made Simple" (PMS); Chandra, Griesemer, Redstone, "Paxos Made
Live" (PML); van Renesse, Altinbuken, "Paxos Made Moderately Complex" (PMMC).

Mapping onto the shared types
-----------------------------
* **Ballot** = ``(round, node_id)``, packed as ``round << 16 | node_id`` into ``Term``
  (``consensus.paxos.ballot``); node ids must be < 65536 (checked in the constructor).
* ``HardState.term`` = the promised ballot; ``HardState.commit`` = the commit point (every
  slot at or below it is chosen and its value is in this node's log or snapshot);
  ``HardState.vote`` is unused.
* ``Entry(index=slot, term=identity, kind, data, accepted_ballot)``: ``term`` is the ballot of
  the proposal that first carried the value (a hole-filling NOOP gets the filling leader's
  ballot) and never changes when a new leader re-proposes it; ``accepted_ballot`` is the
  ballot in which *this* acceptor accepted it, which is what phase 1 compares (PMS §2.3).
  ``propose`` returns ``Proposed(slot, ballot)``; the proposal succeeded iff the entry
  committed at that slot has that ``term`` -- including when a later leader recovered and
  re-proposed it.
* ``Ready.entries`` upserts accepted values (the log may have holes); ``truncate_from`` is
  never needed: acceptors overwrite slot by slot, and a snapshot install drops slots at or
  below its index (``Ready.snapshot``). ``Ready.committed_entries`` is gap-free and ordered
  although slots are chosen out of order.
* Acceptors persist the promised ballot and accepted values before the Promise / Accepted
  that depends on them leaves: both sit in the same ``Ready`` with ``must_sync`` set, and the
  caller persists before sending (PMS §2.3, PML §4).

Election (phase 1 once for all slots, PMS §3, PML §2.2)
-------------------------------------------------------
A voter that hears no leader for a randomized timeout in [T, 2T) first runs a **pre-check**
(when ``pre_vote``): ``PreCheck(ballot, commit)`` asks each voter whether it would promise;
a voter says no if it already promised a ballot at least as high, if it compacted slots the
candidate lacks, if the candidate was removed (below), or -- only with ``check_quorum``, exactly
like Raft, which ignores (pre-)votes while ``RaftCore._in_lease()`` -- if it heard from a live
leader within an election timeout. That refusal exists to protect the CheckQuorum lease
(Raft thesis §6.2, §4.2.3), so without ``check_quorum`` neither backend makes it. Only with
a quorum of yeses does the candidate pick ``round = max(round seen) + 1``, promise its own
ballot and send ``Prepare(ballot, from_slot=commit+1)``. So a partitioned node cannot disrupt
a healthy leader: it never raises ballots anywhere.

Each acceptor that promises answers with every value it accepted at or above ``from_slot``.
**Paging**: a ``Promise`` carries at most ``max_msg_bytes`` of entries (at least one) and
``next_slot`` where it stopped; the candidate re-sends ``Prepare`` with the same ballot from
``next_slot``. That is sound because an acceptor that promised ``b`` accepts nothing below
``b`` and nothing at ``b`` until the candidate leads, so pages cannot change underneath. A
promise counts once its last page arrived.

A ``Nack(HIGHER_BALLOT)`` makes the candidate abandon (PMS §3) and remember the round; the
randomized timer is the backoff against duelling proposers, and the next attempt outbids
the ballot it saw. ``Nack(LEASE)`` / ``Nack(BEHIND)`` count as refusals. An acceptor that
compacted slots at or above ``from_slot`` refuses with ``BEHIND`` rather than promise: it
cannot report those values, refusal is always safe, and an up-to-date node wins instead
(the lagging one is then caught up by snapshot). Likewise an acceptor refuses with
``NOT_MEMBER`` a candidate that is not a voter in the configuration the acceptor committed
beyond the candidate's commit point: a removed node that never learned of its removal would
otherwise depose leaders forever (Raft thesis §4.2.3). A candidate that lost for either reason
stands back for an extra [2T, 4T) ticks: it cannot win, and its ever higher self-promises
would keep outbidding the candidates that can.

With promises from a quorum of **every configuration in play** (below), the new leader takes
per slot the value with the highest ``accepted_ballot`` among the promises (its own log
included), fills holes with NOOPs, re-proposes all of them at its ballot, and enters steady
state. ``campaign()`` starts this now. A leader that has not heard from a quorum within an
election timeout steps down (check_quorum).

Steady state (phase 2 only)
---------------------------
Proposals get the next slot and are batched: between two ``ready()`` calls every new slot for
a peer goes out in one ``Accept`` (at most ``max_msg_bytes``), pipelined up to
``max_inflight_msgs`` unacknowledged messages per peer. A slot is chosen on a quorum of
``Accepted`` at the leader's ballot; the commit point is the gap-free prefix of chosen slots
and is piggybacked on the next ``Accept`` or ``Heartbeat``. Acceptors never reject gaps, so
loss shows up only as a peer's ``accepted_through`` not moving between two heartbeat acks:
the leader then resends from there (duplicates are harmless, accepting is idempotent).

Followers learn
---------------
A follower marks slot ``s`` chosen -- advancing its commit point -- only if ``s`` is at or
below the commit point carried by a message of the leader of ballot ``b`` *and* it accepted
``s`` at ``b`` itself (for every slot between its old commit point and ``s``). Argument: a
leader proposes at most one value per slot per ballot and never changes it (a proposer owns
its ballots, and a restarted node always campaigns with a new round above its persisted
promise). The leader's commit point only covers slots whose chosen value is in its log, and
for a slot it sent at ``b`` that value is the one it proposed at ``b``, because it never
replaces its value in a slot while it leads at ``b``. Hence a value accepted at ``b`` below
``b``'s commit point is the chosen one. Anything else -- a hole, or a value accepted at an
older ballot -- may differ from the chosen value and needs catch-up.

Catch-up
--------
The leader sends a lagging peer what it lacks, starting at the peer's ``accepted_through + 1``:
already-chosen slots travel as ``Learn`` (chosen-value transfer, bounded by
``max_msg_bytes``), the rest as ``Accept``. A peer that needs compacted slots receives the
snapshot as ``InstallSnapshot`` chunks of at most ``max_snapshot_chunk_bytes``, in order, one
in flight, resumed from the receiver's offset; on the last chunk it emits ``Ready.snapshot``
and ``Ready.apply_snapshot``. Values it accepted above the snapshot are kept: they are
acceptor state, not yet known to be chosen.

Reconfiguration (alpha = 1 at configuration changes, PMS §3, PMMC §3)
---------------------------------------------------------------------
A CONFIG entry at slot ``s`` governs slots ``> s``; every slot has exactly one configuration:
the one written in the last CONFIG value below it. Its data is the shared format of
``consensus.membership``: the ops *and the resulting configuration*, which every node adopts as
written when the slot is chosen (``_apply_conf_entry``) or when it is recovered in phase 1
(``_conf_chain``). Never replaying ops on a node's own base is what makes a joiner safe: it
starts with an empty ``ConfState`` (``consensus.api.CoreFactory``) and, replaying ``l4, v4`` on
that, would conclude ``voters=(4)`` and choose values with a quorum of one. A snapshot carries
the configuration at its slot in ``SnapshotMeta.conf``. A node whose configuration has no
voters (a joiner that has learned nothing yet) never campaigns and never counts itself a
quorum (``consensus.membership.tally``/``is_quorum``). Rules:

1. One pending change at a time, and the leader proposes nothing beyond a CONFIG slot until
   that slot is committed (``ProposalDropped`` meanwhile). So when slot ``t > s`` is proposed,
   every CONFIG value below ``t`` is known, and the leader counts quorums in the configuration
   of its commit point, which is the configuration of every slot it has in flight.
2. Phase 1 needs promises from a quorum of every configuration in play: the one at
   ``commit+1`` plus one per CONFIG value among the recovered highest-ballot values, in slot
   order. Why this suffices: a value chosen at slot ``t`` was chosen by a quorum of ``t``'s
   configuration ``C``; ``C`` is produced by a chosen CONFIG value at some slot below ``t``
   (or is the known base), which -- by induction over slots, since the promises include a
   quorum of the configuration before it -- is reported as the highest-ballot value there and
   so is in the chain. The promise set therefore intersects ``C``'s quorum and reports the
   value at ``t`` (PMS §2.2 argument per slot). A recovered CONFIG value that was never
   chosen only adds a requirement (liveness cost, no safety cost).
3. Because a slot is never decided under two configurations, several voters may change in
   one entry: Multi-Paxos needs no joint configuration (``voters_outgoing`` stays empty).

A fresh CONFIG value needs no new phase 1 at the same ballot: nothing above ``s`` can have
been chosen at a lower ballot, since no leader proposes above ``s`` before ``s`` is chosen and
``s``'s value is unique to this ballot. Learners (ADD_LEARNER) receive everything and are never
counted; ADD_VOTER promotes; REMOVE drops a node; a removed leader steps down once the change
commits.

Leadership transfer
-------------------
``transfer_leadership(target)`` refuses proposals (``ProposalDropped``), catches the target up
until it accepted every slot at our ballot, then sends ``TimeoutNow``; the target campaigns at
once, skipping the pre-check, with ``Prepare(transfer=True)`` which acceptors honour despite the
lease. The attempt is abandoned after an election timeout. Once ``TimeoutNow`` was sent the
leader never trusts its lease again at this ballot.

Reads
-----
``SAFE``: once the values recovered in phase 1 are chosen again (the analogue of Raft's
no-op: only then is our commit point at least every previously chosen slot), the read takes
the commit index and waits for a quorum to acknowledge a heartbeat round sent after the
request; an acceptor that promised a higher ballot answers with a ``Nack`` instead, so an ack
quorum proves no other leader could have chosen anything (PMS §2.3 quorum intersection).

``LEASE``: acceptors (with ``check_quorum``) refuse to promise another proposer's ballot within
an election timeout of *receiving* a message from their leader (unless a transfer). When a
quorum acknowledged the round sent at leader tick ``t``, no other proposer can complete phase 1
before each of those acceptors' timers ran out, i.e. not before leader tick
``t + election_timeout_ticks`` under equal clock rates; the leader trusts the lease until
``t + election_timeout_ticks * (1 - lease_clock_drift_ratio)`` to absorb clock-rate drift. Outside
the lease, LEASE reads fall back to SAFE. Like Raft's lease, this assumes an acceptor that
restarts does not promise within an election timeout of its restart (its timer is volatile).
"""

from consensus.invariants import InvariantViolation
from consensus.paxos.ballot import ballot_node, ballot_round, make_ballot
from consensus.paxos.core import PaxosCore

__all__ = ["InvariantViolation", "PaxosCore", "ballot_node", "ballot_round", "make_ballot"]
