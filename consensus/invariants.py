"""Invariant checks for the pure cores, shared by both backends.

A helper that raises instead of ``assert``, so invariants stay on under ``python -O``
(TigerStyle). ``InvariantViolation`` means a bug in this process, not bad input: it is
deliberately not a ``ConsensusError``, so no caller mistakes it for a refusal it may handle.
"""

from __future__ import annotations


class InvariantViolation(Exception):
    """An internal invariant of a core does not hold."""


def require(condition: bool, message: str) -> None:
    """Raise ``InvariantViolation`` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InvariantViolation(message)
