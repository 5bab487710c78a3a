"""Reconnect delays: exponential backoff with jitter drawn from an injected generator."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """``delay_s(n)`` is ``min(max_s, initial_s * multiplier**n)`` minus a random fraction of
    at most ``jitter`` of it. The jitter keeps nodes that lost a peer at the same moment
    from redialling it in lockstep (thundering herd after a restart)."""

    initial_s: float = 0.05
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if self.multiplier < 1.0:
            raise ValueError("multiplier must be >= 1")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry number ``attempt`` (0 for the first retry)."""
        # Capping the exponent keeps the float finite; max_s caps the value anyway.
        base = min(self.max_s, self.initial_s * self.multiplier ** min(max(attempt, 0), 64))
        return base * (1.0 - self.jitter * rng.random())
