"""The PEP 249 exception hierarchy, shared by the async client and the DB-API driver.

Every error the clients raise is one of these classes. Each carries ``code`` (an error code
of the SQL client protocol, op ``sql``, or one of the client's own codes below),
``message`` (the server's text verbatim, which is also ``str(exc)``) and ``details`` (every
other field of the error reply, e.g. ``statement`` or ``applied_ranges``).

The mapping from codes to classes follows the SQL client protocol; codes it does not list
(the node runtime's own, or ones added later) fall back to ``DatabaseError`` so that a newer
server never makes an older client crash on an unknown code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final


class Warning(Exception):  # PEP 249 names it so (shadowing the builtin here only)
    """Important warnings (PEP 249). shardb raises none; it exists for compatibility."""


class Error(Exception):
    """Base of every error the shardb clients raise (PEP 249)."""

    def __init__(
        self, message: str, *, code: str = "error", details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    @property
    def retryable(self) -> bool:
        """True when nothing was applied and the same request may be sent again (to this or
        another gateway) without risk of applying it twice."""
        return self.code in RETRYABLE_CODES


class InterfaceError(Error):
    """The client was misused (closed connection or cursor) or the peer broke the protocol."""


class DatabaseError(Error):
    """An error reported by the database."""


class DataError(DatabaseError):
    """A value does not fit (type mismatch, too big)."""


class OperationalError(DatabaseError):
    """The cluster could not do it now (unavailable, timeout, unknown outcome, overloaded)."""


class IntegrityError(DatabaseError):
    """A constraint was violated (UNIQUE, NOT NULL, CHECK, primary key)."""


class InternalError(DatabaseError):
    """The server failed internally."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: syntax, unknown table or index, parameters, non-determinism;
    or a cursor was used out of order (fetch without a result set)."""


class NotSupportedError(DatabaseError):
    """shardb does not support the statement or API (e.g. ``rollback``)."""


# Codes the client makes up itself (the server's codes are in the protocol document).
UNREACHABLE: Final = "unreachable"
"""No gateway address could be connected to (nothing was sent)."""
UNKNOWN_OUTCOME: Final = "unknown_outcome"
"""A write was in flight when its connection broke: it may or may not have applied."""
TIMEOUT: Final = "timeout"
"""No reply before the deadline; a write may still apply later."""
CLOSED: Final = "closed"
"""The connection or cursor was closed by the application."""
BAD_REPLY: Final = "bad_reply"
"""The peer sent something the protocol does not allow (a buggy or foreign server)."""
NO_RESULT_SET: Final = "no_result_set"
"""A fetch without a preceding statement that produced rows."""
PARAMETER_ERROR: Final = "parameter_error"
DATA_ERROR: Final = "data_error"
CLUSTER_MISMATCH: Final = "cluster_mismatch"
"""A failover address belongs to another cluster than the first gateway reached."""

RETRYABLE_CODES: Final = frozenset({"not_leader", "dropped", "overloaded", "unavailable"})
"""Error codes after which nothing was applied (SQL client protocol, "errors")."""

ERROR_CLASSES: Final[Mapping[str, type[Error]]] = {
    "syntax_error": ProgrammingError,
    "unknown_table": ProgrammingError,
    "unknown_index": ProgrammingError,
    "parameter_error": ProgrammingError,
    "non_deterministic": ProgrammingError,
    "unsupported": NotSupportedError,
    "sql_error": OperationalError,
    "constraint": IntegrityError,
    "data_error": DataError,
    "unavailable": OperationalError,
    "timeout": OperationalError,
    "unknown_outcome": OperationalError,
    "partial": OperationalError,
    "bad_request": InterfaceError,
    "overloaded": OperationalError,
    "internal": InternalError,
    # The node runtime's own codes (consensus.runtime.protocol / errors), which a gateway
    # may pass through.
    "not_leader": OperationalError,
    "dropped": OperationalError,
    "unknown_group": OperationalError,
    "lost": OperationalError,
    "node_failed": OperationalError,
    "node_closed": OperationalError,
    "version_mismatch": InterfaceError,
    # The client's own.
    UNREACHABLE: OperationalError,
    CLOSED: InterfaceError,
    BAD_REPLY: InterfaceError,
    NO_RESULT_SET: ProgrammingError,
    CLUSTER_MISMATCH: InterfaceError,
}


def error_for(code: str, message: str, details: Mapping[str, Any] | None = None) -> Error:
    """The exception for ``code`` (``DatabaseError`` for a code this client does not know)."""
    cls = ERROR_CLASSES.get(code, DatabaseError)
    return cls(message, code=code, details=details)


def error_from_reply(error: Any) -> Error:
    """The exception for the ``error`` map of a reply, message kept verbatim."""
    if not isinstance(error, Mapping):
        return InterfaceError(f"malformed error reply: {error!r}", code=BAD_REPLY)
    code = error.get("code")
    message = error.get("message", "")
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    return error_for(
        code if isinstance(code, str) else "internal",
        message if isinstance(message, str) else str(message),
        details,
    )
