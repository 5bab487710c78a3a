"""What an executor reports for one operation, and how protocol errors map to outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from consensus.sim.linearizability import Outcome

__all__ = ["OpResult", "Outcome", "outcome_of_error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OpResult:
    outcome: Outcome
    result: int | bool | None = None
    """A register read: the value read (None = absent). A CAS: whether it swapped."""
    retries: int = 0
    """Retries the client made (e.g. on ``not_leader``) before this outcome."""
    error: str = ""
    """The protocol error code when the operation did not succeed."""


# Error codes of the SQL protocol after which the statement certainly had no effect: refused
# before it was proposed, or a deterministic error that every replica returns without
# changing state.
_DEFINITE_FAILURES: Final = frozenset(
    {"syntax_error", "unknown_table", "unknown_index", "parameter_error", "non_deterministic",
     "unsupported", "sql_error", "constraint", "data_error", "unavailable", "bad_request",
     "overloaded", "not_leader", "dropped"}
)  # fmt: skip


def outcome_of_error(code: str) -> Outcome:
    """``fail`` when the error proves the operation took no effect, else ``unknown``
    (``timeout``, ``unknown_outcome``, ``partial``, ``internal``, a broken connection, ...).

    Guessing ``fail`` for an ambiguous error would make the checker reject a correct system.
    """
    return Outcome.FAIL if code in _DEFINITE_FAILURES else Outcome.UNKNOWN
