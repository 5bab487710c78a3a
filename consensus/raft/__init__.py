"""The Raft backend: a pure, deterministic core behind ``consensus.api.ConsensusCore``.

See ``core.py`` for the state machine and the read/lease reasoning, ``conf.py`` for
membership changes, ``log.py`` for the in-memory log and ``progress.py`` for replication
state. Message bodies are in ``messages.py``.
"""

from consensus.invariants import InvariantViolation
from consensus.raft.core import RaftCore
from consensus.raft.progress import ProgressState

__all__ = ["InvariantViolation", "ProgressState", "RaftCore"]
