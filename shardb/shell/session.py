"""The seam between the shell and a cluster connection.

The shell is written against these small protocols, not against ``shardb.client``: the lead
wires the real async (trio) client in behind :class:`Session`, and tests use a recording double.
A result needs only the five fields every SQL reply carries (see the SQL client protocol:
``kind``, ``columns``, ``rows``, ``rowcount``, ``trace``).

Errors: whatever ``execute``/``meta`` raise is sorted by :func:`classify_error` into "the
statement failed" (exit code 1) and "the cluster is unreachable or could not decide" (exit code
3). The client's exceptions carry the server's error ``code`` as ``.code``; connection-level
failures are ``OSError`` or trio's broken/closed stream errors. Anything else is a bug and is
left to propagate.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from consensus.types import GroupId, NodeId

#: A value in a result row, exactly as the wire protocol carries it.
Cell = None | int | float | str | bytes

CONSISTENCY_LEVELS = ("linearizable", "lease", "stale")


class StatementResult(Protocol):
    """What one statement returned (``shardb.client`` ``Result`` fits this shape)."""

    @property
    def kind(self) -> str: ...
    @property
    def columns(self) -> Sequence[str]: ...
    @property
    def rows(self) -> Sequence[Sequence[Cell]]: ...
    @property
    def rowcount(self) -> int: ...
    @property
    def trace(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Rows:
    """A result the shell builds itself (``.nodes``, ``.ranges``, ...), shaped like a reply."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    kind: str = "admin"
    rowcount: int = -1
    trace: Mapping[str, Any] | None = None


# --- fault commands (handed to ``Session.faults``; the admin endpoint is not the shell's) ---


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Cut the network between ``sides``; nodes within one side still talk."""

    sides: tuple[tuple[NodeId, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Isolate:
    node: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Heal:
    """Remove every partition, isolation and slowdown."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash:
    node: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart:
    node: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Slow:
    """Delay every message ``node`` sends by ``delay_ms``."""

    node: NodeId
    delay_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Skew:
    """Shift ``node``'s clock by ``offset_ms`` (negative: behind)."""

    node: NodeId
    offset_ms: int


FaultCommand = Partition | Isolate | Heal | Crash | Restart | Slow | Skew


class FaultsDisabled(Exception):
    """Raised by ``Session.faults`` to refuse; ``message`` is shown to the user as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Session(Protocol):
    """One shell's connection to a cluster."""

    @property
    def address(self) -> str:
        """The gateway this session talks to, e.g. ``127.0.0.1:7001`` (shown in the prompt)."""
        ...

    @property
    def backend(self) -> str:
        """The cluster's default consensus backend, ``raft`` or ``paxos`` (shown in the prompt)."""
        ...

    consistency: str
    """Read consistency for the next statements: one of :data:`CONSISTENCY_LEVELS`."""

    trace: bool
    """Ask the gateway for a per-statement trace (the ``trace`` request flag)."""

    async def execute(self, sql: str, params: Sequence[Cell] = ()) -> StatementResult: ...

    async def meta(self) -> Mapping[str, Any]:
        """The ``meta`` op's result: ``nodes``, ``ranges``, ``tables`` (optionally ``indexes``)."""
        ...

    async def transfer_leader(self, group_id: GroupId, node_id: NodeId) -> str:
        """Ask ``group_id`` to hand leadership to ``node_id``; return a line to show."""
        ...

    async def faults(self, command: FaultCommand) -> str:
        """Inject ``command`` through the admin endpoint; return a line to show.

        Raises :class:`FaultsDisabled` when this cluster does not allow fault injection.
        """
        ...


# --- errors and exit codes ------------------------------------------------------------------


class ExitCode(enum.IntEnum):
    """``shardb sql`` exit status."""

    OK = 0
    SQL_ERROR = 1
    USAGE = 2
    UNAVAILABLE = 3


#: Error codes that say the cluster could not serve or decide, not that the statement is
#: wrong: retrying later (or elsewhere) may succeed. ``unknown_outcome`` and ``partial`` are
#: here because the user must look at the cluster before retrying, not fix their SQL. The
#: last four are the client's and the node runtime's (``shardb.client.errors``).
UNAVAILABLE_CODES = frozenset(
    {
        "unavailable",
        "timeout",
        "unknown_outcome",
        "partial",
        "overloaded",
        "not_leader",
        "dropped",
        "unreachable",
        "lost",
        "node_failed",
        "node_closed",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellError:
    """A failure as the shell reports it."""

    code: str
    message: str
    exit_code: ExitCode


def classify_error(error: BaseException) -> ShellError | None:
    """Sort an exception from ``execute``/``meta``; None means "not a database error: re-raise"."""
    code = getattr(error, "code", None)
    if isinstance(code, str):
        message = getattr(error, "message", None)
        text = message if isinstance(message, str) else str(error)
        exit_code = ExitCode.UNAVAILABLE if code in UNAVAILABLE_CODES else ExitCode.SQL_ERROR
        return ShellError(code=code, message=text, exit_code=exit_code)
    if isinstance(error, OSError | trio.BrokenResourceError | trio.ClosedResourceError):
        return ShellError(
            code="unavailable",
            message=f"cannot reach the cluster: {error}",
            exit_code=ExitCode.UNAVAILABLE,
        )
    return None
