"""Fault profiles and the random choice of the next fault.

The injector only *chooses* (from its own seeded rng); the simulation carries the fault out,
because it owns the network and the nodes. Profiles:

* ``none``: a healthy cluster (the baseline every protocol must get right first);
* ``network``: loss, duplication, long delays, symmetric / one-way / bridge partitions;
* ``crash``: crash and restart nodes, losing unsynced writes (all of them, or all but a
  random prefix), sometimes in the middle of processing a Ready;
* ``skew``: per-node tick rates differ (within half the lease drift bound);
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


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultTiming:
    interval_ticks: tuple[int, int] = (3, 60)
    """Base ticks between two injected faults."""
    down_ticks: tuple[int, int] = (1, 40)
    """How long a crashed node stays down."""
    bounce_ratio: float = 0.3
    """Share of crashes that restart within one tick: back inside the same election."""


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

    def record(self, kind: FaultKind) -> None:
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1
