"""Backend registry: build a Raft or Multi-Paxos core by name.

The simulator, the host and the CLI select a backend with a string so that every layer above
the cores stays backend-agnostic. Imports are deferred so that a backend under development
never breaks the other.
"""

from __future__ import annotations

import enum
import importlib

from consensus.api import CoreFactory


class Backend(enum.Enum):
    RAFT = "raft"
    PAXOS = "paxos"


_FACTORIES: dict[Backend, tuple[str, str]] = {
    Backend.RAFT: ("consensus.raft", "RaftCore"),
    Backend.PAXOS: ("consensus.paxos", "PaxosCore"),
}


def core_factory(backend: Backend | str) -> CoreFactory:
    """The class implementing ``ConsensusCore`` for ``backend`` (e.g. ``"raft"``)."""
    chosen = Backend(backend)
    module_name, attr = _FACTORIES[chosen]
    module = importlib.import_module(module_name)
    factory: CoreFactory = getattr(module, attr)
    return factory
