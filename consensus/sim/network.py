"""A simulated network: delay, loss, duplication, reordering and partitions.

The network decides *whether* and *when* each message arrives; the simulator's event queue
does the waiting. Every random draw comes from the one ``random.Random`` handed in, so a
seed fixes every delivery time. Reordering needs no special code: two messages on the same
link get independent delays.

Partitions are a set of cut directed links. A cut is checked when a message is sent and
again when it would arrive, so cutting a link also loses what was in flight on it (as
pulling a cable does). Shapes offered, after Jepsen's nemeses:

* ``partition(groups)``: symmetric, nodes talk only inside their group;
* ``cut_one_way(src, dst)``: asymmetric, ``src`` can no longer reach ``dst`` but hears it;
* ``bridge(node, peer)``: ``node`` reaches only ``peer`` while ``peer`` still reaches
  everyone; with three nodes this is the classic "one node sees both halves" case that
  PreVote and CheckQuorum exist for (Raft thesis §9.6, §6.2).

The number of messages in flight is bounded (TigerStyle: a limit on every queue); when full
a message is dropped, which both protocols must tolerate.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consensus.types import Message, NodeId


class NetworkError(ValueError):
    """A partition request that names unknown nodes or is malformed."""


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_overflow: int = 0


class SimNetwork:
    __slots__ = (
        "_cut",
        "_nodes",
        "_rng",
        "dup_rate",
        "in_flight",
        "loss_rate",
        "max_delay_us",
        "max_in_flight",
        "min_delay_us",
        "stats",
    )

    def __init__(
        self,
        nodes: Iterable[NodeId],
        rng: random.Random,
        *,
        min_delay_us: int = 200,
        max_delay_us: int = 2_000,
        loss_rate: float = 0.0,
        dup_rate: float = 0.0,
        max_in_flight: int = 10_000,
    ) -> None:
        self._nodes: tuple[NodeId, ...] = tuple(sorted(set(nodes)))
        self._rng = rng
        self._cut: set[tuple[NodeId, NodeId]] = set()
        self.min_delay_us = min_delay_us
        self.max_delay_us = max_delay_us
        self.loss_rate = loss_rate
        self.dup_rate = dup_rate
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.stats = NetworkStats()
        self.set_conditions(min_delay_us=min_delay_us, max_delay_us=max_delay_us)

    @property
    def nodes(self) -> tuple[NodeId, ...]:
        return self._nodes

    # ------------------------------------------------------------------ conditions

    def set_conditions(
        self,
        *,
        min_delay_us: int | None = None,
        max_delay_us: int | None = None,
        loss_rate: float | None = None,
        dup_rate: float | None = None,
    ) -> None:
        if min_delay_us is not None:
            self.min_delay_us = min_delay_us
        if max_delay_us is not None:
            self.max_delay_us = max_delay_us
        if loss_rate is not None:
            self.loss_rate = loss_rate
        if dup_rate is not None:
            self.dup_rate = dup_rate
        if not 0 <= self.min_delay_us <= self.max_delay_us:
            raise NetworkError("need 0 <= min_delay_us <= max_delay_us")
        if not (0.0 <= self.loss_rate <= 1.0 and 0.0 <= self.dup_rate <= 1.0):
            raise NetworkError("loss_rate and dup_rate must be within [0, 1]")

    # ------------------------------------------------------------------ partitions

    def _check(self, nodes: Iterable[NodeId]) -> None:
        unknown = sorted(set(nodes) - set(self._nodes))
        if unknown:
            raise NetworkError(f"unknown nodes {unknown}")

    def reachable(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) not in self._cut

    def cut_one_way(self, src: NodeId, dst: NodeId) -> None:
        self._check((src, dst))
        if src != dst:
            self._cut.add((src, dst))

    def cut(self, a: NodeId, b: NodeId) -> None:
        self.cut_one_way(a, b)
        self.cut_one_way(b, a)

    def partition(self, groups: Sequence[Iterable[NodeId]]) -> None:
        """Cut every link between different groups; nodes in no group are isolated."""
        sets = [frozenset(g) for g in groups]
        for i, group in enumerate(sets):
            self._check(group)
            if any(group & other for other in sets[i + 1 :]):
                raise NetworkError("partition groups overlap")
        side = {n: i for i, group in enumerate(sets) for n in group}
        for a in self._nodes:
            for b in self._nodes:
                if a != b and (a not in side or b not in side or side[a] != side[b]):
                    self._cut.add((a, b))

    def isolate(self, node: NodeId) -> None:
        self._check((node,))
        for other in self._nodes:
            self.cut(node, other)

    def bridge(self, node: NodeId, peer: NodeId) -> None:
        """``node`` can exchange messages with ``peer`` only; ``peer`` keeps every link."""
        self._check((node, peer))
        if node == peer:
            raise NetworkError("a bridge needs two different nodes")
        for other in self._nodes:
            if other not in (node, peer):
                self.cut(node, other)

    def heal(self) -> None:
        self._cut.clear()

    def reconnect(self, node: NodeId) -> None:
        """Restore every link to and from ``node``; cuts between other nodes stay."""
        self._check((node,))
        self._cut = {link for link in self._cut if node not in link}

    @property
    def cut_links(self) -> tuple[tuple[NodeId, NodeId], ...]:
        return tuple(sorted(self._cut))

    # ------------------------------------------------------------------ traffic

    def send(self, message: Message, now_us: int) -> list[int]:
        """Accept ``message`` at ``now_us``; return the times its copies arrive (0, 1 or 2)."""
        stats = self.stats
        stats.sent += 1
        if (message.src, message.dst) in self._cut:
            stats.dropped_partition += 1
            return []
        rng = self._rng
        if self.loss_rate and rng.random() < self.loss_rate:
            stats.dropped_loss += 1
            return []
        copies = 2 if self.dup_rate and rng.random() < self.dup_rate else 1
        times: list[int] = []
        for _ in range(copies):
            if self.in_flight >= self.max_in_flight:
                stats.dropped_overflow += 1
                continue
            self.in_flight += 1
            times.append(now_us + rng.randint(self.min_delay_us, self.max_delay_us))
        if len(times) == 2:
            stats.duplicated += 1
        return times

    def arrive(self, message: Message) -> bool:
        """A copy reached its due time: True if it is delivered, False if a cut ate it."""
        self.in_flight -= 1
        if (message.src, message.dst) in self._cut:
            self.stats.dropped_partition += 1
            return False
        self.stats.delivered += 1
        return True
