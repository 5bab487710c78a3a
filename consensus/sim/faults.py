"""Fault profiles and the random choice of the next fault.

The injector only *chooses* (from its own seeded rng); the simulation carries the fault out,
because it owns the network and the nodes. Profiles:

* ``none``: a healthy cluster (the baseline every protocol must get right first);
* ``network``: loss, duplication, long delays, symmetric / one-way / bridge partitions;
* ``crash``: crash and restart nodes, losing unsynced writes (all of them, or all but a
  random prefix), sometimes in the middle of processing a Ready;
* ``skew``: per-node tick rates differ (within half the lease drift bound);
* ``elections``: leadership churn. Election timeouts are short relative to the spread of
  message delays, so split votes and competing candidates in one term are common; every
  new leader is, with some probability, isolated or crashed shortly after it took office
  (so what it accepted sits on a minority) and comes back soon (so it can win again in a
  later term); nodes are armed to crash right after they vote/promise or acknowledge
  entries. This is what makes the Figure 8 sequence (Raft §5.4.2), double votes and
  forgotten votes (§5.2) reachable, see ``tests/sim/test_broken_variants.py``;
* ``membership``: an operator adds learners, promotes them, removes voters (never below
  three) and transfers leadership, while spare nodes wait to join;
* ``all``: everything above.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class FaultProfile(enum.Enum):
    NONE = "none"
    NETWORK = "network"
    CRASH = "crash"
    SKEW = "skew"
    ELECTIONS = "elections"
    MEMBERSHIP = "membership"
    ALL = "all"

    @property
    def network(self) -> bool:
        return self in (FaultProfile.NETWORK, FaultProfile.ALL)

    @property
    def crash(self) -> bool:
        return self in (FaultProfile.CRASH, FaultProfile.ALL)

    @property
    def skew(self) -> bool:
        return self in (FaultProfile.SKEW, FaultProfile.ALL)

    @property
    def elections(self) -> bool:
        return self in (FaultProfile.ELECTIONS, FaultProfile.ALL)

    @property
    def membership(self) -> bool:
        return self in (FaultProfile.MEMBERSHIP, FaultProfile.ALL)


class FaultKind(enum.Enum):
    PARTITION = "partition"
    ONE_WAY = "one_way"
    BRIDGE = "bridge"
    ISOLATE = "isolate"
    HEAL = "heal"
    LOSSY = "lossy"
    SLOW = "slow"
    CALM = "calm"
    CRASH = "crash"
    CRASH_MID_READY = "crash_mid_ready"
    RESTART = "restart"
    SKEW = "skew"
    LEADER_ISOLATED = "leader_isolated"
    """A new leader cut off shortly after it took office (elections)."""
    LEADER_CRASHED = "leader_crashed"
    """A new leader crashed shortly after it took office (elections)."""
    RECONNECT = "reconnect"
    """An isolated leader's links restored (elections)."""
    CRASH_ON_VOTE = "crash_on_vote"
    """A node armed to crash right after its next vote or promise (elections)."""
    CRASH_ON_ACK = "crash_on_ack"
    """A node armed to crash right after it next writes and acknowledges entries."""
    QUIESCED_LEADER_ISOLATED = "quiesced_leader_isolated"
    """Multi-group mode (network): the node leading the most quiesced groups is cut off for
    longer than the peers' liveness detector needs to suspect it and elect new leaders, then
    comes back: its frozen leases are what the host's LEASE->SAFE downgrade guards."""


_NETWORK_WEIGHTS: dict[FaultKind, int] = {
    FaultKind.PARTITION: 3,
    FaultKind.ONE_WAY: 2,
    FaultKind.BRIDGE: 2,
    FaultKind.ISOLATE: 2,
    FaultKind.HEAL: 3,
    FaultKind.LOSSY: 2,
    FaultKind.SLOW: 1,
    FaultKind.CALM: 2,
}
_CRASH_WEIGHTS: dict[FaultKind, int] = {
    FaultKind.CRASH: 3,
    FaultKind.CRASH_MID_READY: 2,
}
_ELECTION_WEIGHTS: dict[FaultKind, int] = {
    FaultKind.CRASH_ON_VOTE: 3,
    FaultKind.CRASH_ON_ACK: 2,
}


class ChurnMoment(enum.Enum):
    """When in its first moments a churned leader is struck."""

    ELECTED = "elected"
    """As it takes office: its no-op is in flight and an isolation loses it, so what it
    appended stays on it alone."""
    PROPOSAL = "proposal"
    """Right after it appended a client proposal: the entry sits on the leader only."""
    COMMIT = "commit"
    """Right after its commit index moves: the rest of the log, and the news of the
    commit, are in flight."""
    DELAY = "delay"
    """After a random delay of up to a few ticks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Churn:
    kind: FaultKind
    moment: ChurnMoment
    delay_us: int
    """With ``ChurnMoment.DELAY``."""
    away_us: int
    """How long the leader stays isolated or down at most. An isolated leader comes back
    earlier when the next leader is isolated: one isolated leader at a time, so that
    leaders of successive terms take turns, as in Raft Figure 8."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultTiming:
    interval_ticks: tuple[int, int] = (3, 60)
    """Base ticks between two injected faults."""
    down_ticks: tuple[int, int] = (1, 40)
    """How long a crashed node stays down."""
    bounce_ratio: float = 0.3
    """Share of crashes that restart within one tick: back inside the same election."""
    churn_ratio: float = 0.7
    """Share of new leaders that the elections profile isolates or crashes."""
    churn_moment_weights: tuple[int, ...] = (3, 3, 3, 1)
    """Weights of ELECTED, PROPOSAL, COMMIT, DELAY."""
    churn_delay_ticks: tuple[int, int] = (0, 4)
    """``ChurnMoment.DELAY``: how long after taking office a churned leader is struck."""
    churn_away_timeouts: tuple[int, int] = (1, 4)
    """How long, in election timeouts, a churned leader stays isolated or down: long enough
    for the others to elect someone else, short enough to come back and compete."""


class FaultInjector:
    def __init__(
        self, profile: FaultProfile, rng: random.Random, timing: FaultTiming = FaultTiming()
    ) -> None:
        self.profile = profile
        self.timing = timing
        self._rng = rng
        weights: dict[FaultKind, int] = {}
        if profile.network:
            weights.update(_NETWORK_WEIGHTS)
        if profile.crash:
            weights.update(_CRASH_WEIGHTS)
        if profile.elections:
            weights.update(_ELECTION_WEIGHTS)
        self._kinds = tuple(weights)
        self._weights = tuple(weights[k] for k in self._kinds)
        self.counts: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Whether faults are injected during the run (skew is set once at the start)."""
        return bool(self._kinds)

    def next_interval_ticks(self) -> int:
        low, high = self.timing.interval_ticks
        return self._rng.randint(low, high)

    def down_us(self, tick_us: int) -> int:
        """How long the next crashed node stays down."""
        if self._rng.random() < self.timing.bounce_ratio:
            return self._rng.randint(1, tick_us)
        low, high = self.timing.down_ticks
        return self._rng.randint(low, high) * tick_us

    def choose(self) -> FaultKind:
        return self._rng.choices(self._kinds, self._weights)[0]

    def churn(self, tick_us: int, election_timeout_us: int, max_delay_us: int) -> Churn | None:
        """What to do to a leader that just took office (None: leave it alone)."""
        if not self.profile.elections:
            return None
        rng = self._rng
        timing = self.timing
        if rng.random() >= timing.churn_ratio:
            return None
        kind = FaultKind.LEADER_ISOLATED if rng.random() < 0.7 else FaultKind.LEADER_CRASHED
        moment = rng.choices(tuple(ChurnMoment), timing.churn_moment_weights)[0]
        delay = 0
        if moment is ChurnMoment.DELAY:
            if rng.random() < 0.5:
                delay = rng.randint(0, max_delay_us)
            else:
                low, high = timing.churn_delay_ticks
                delay = rng.randint(low * tick_us, high * tick_us)
        low, high = timing.churn_away_timeouts
        away = rng.randint(low * election_timeout_us, high * election_timeout_us)
        return Churn(kind=kind, moment=moment, delay_us=delay, away_us=away)

    def record(self, kind: FaultKind) -> None:
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1
