"""Errors a node reports to the callers of its requests.

``NotLeader`` and ``ProposalDropped`` come straight from the cores (``consensus.api``) and
``UnknownGroup`` from the host; these are the outcomes only the runtime can know about.
Each says whether the request may have taken effect, because that decides whether a client
may retry a non-idempotent command.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of the runtime's own request errors."""

    code = "node_error"


class Overloaded(NodeError):
    """The node's bounded request queue is full: nothing was proposed; retry later."""

    code = "overloaded"


class ProposalLost(NodeError):
    """Another entry committed at the proposal's index: the command will never apply."""

    code = "lost"


class OutcomeUnknown(NodeError):
    """The command may or may not have applied: the deadline passed first, or a snapshot
    replaced the log over the proposal's index before this node saw the entry."""

    code = "unknown_outcome"


class RequestTimeout(OutcomeUnknown):
    """The deadline passed before the request completed (a write may still apply later)."""

    code = "timeout"


class NodeFailed(NodeError):
    """Storage failed (``StorageFailed``) or the state machine broke: the node stopped
    accepting requests and must be restarted from what is on disk."""

    code = "node_failed"


class NodeClosed(NodeError):
    """The node shut down before the request completed (outcome unknown for writes)."""

    code = "node_closed"


class GroupConflict(NodeError):
    """``create_group`` for an existing group with another backend or membership."""

    code = "group_conflict"


class ApplicationError(Exception):
    """An error of the application served over the client port (e.g. a SQL error from the
    database gateway): its ``code`` and ``details`` reach the client verbatim in the error
    reply, beside the message."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        self.code = code
        self.message = message
        self.details = details
        super().__init__(message)


class GroupRemoved(NodeError):
    """``remove_group`` took the group off this node while the request was pending. Reads
    did not happen; a write may still have committed on the group's other replicas
    (outcome unknown, as for ``OutcomeUnknown``)."""

    code = "group_removed"
