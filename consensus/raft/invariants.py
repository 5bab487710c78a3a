"""Invariant checks that stay on in production (TigerStyle): ``assert`` vanishes under
``python -O``, and a Raft invariant broken silently is how logs diverge."""

from __future__ import annotations


class InvariantViolation(Exception):
    """An internal Raft invariant does not hold: a bug, or storage handed back bad state."""


def require(condition: bool, message: str) -> None:
    """Raise ``InvariantViolation`` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InvariantViolation(message)
