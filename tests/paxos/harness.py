"""Helpers for Multi-Paxos tests: one core driven by hand, or a cluster of them.

Clusters come from the shared backend-agnostic driver ``tests.support.cluster`` with
``backend="paxos"``; single-core tests step hand-made messages into one ``PaxosCore``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from consensus.api import CoreConfig, PersistedState, Ready
from consensus.paxos import PaxosCore
from consensus.paxos.messages import PaxosMessage
from consensus.types import ConfState, GroupId, Message, NodeId

try:  # pytest puts tests/ on sys.path (tests/ itself is not a package)...
    from support.cluster import GROUP, Cluster, RecordingLogger
except ImportError:  # ...unless it becomes one
    from tests.support.cluster import GROUP, Cluster, RecordingLogger


def cluster(n: int = 3, *, seed: int = 0, **config: Any) -> Cluster:
    return Cluster(n, backend="paxos", seed=seed, **config)


def core(
    node_id: int = 1,
    voters: tuple[int, ...] = (1, 2, 3),
    *,
    persisted: PersistedState | None = None,
    log: list[str] | None = None,
    learners: tuple[int, ...] = (),
    **config: Any,
) -> PaxosCore:
    cfg = dataclasses.replace(CoreConfig(node_id=NodeId(node_id), group_id=GROUP), **config)
    conf = ConfState(
        voters=tuple(NodeId(v) for v in voters), learners=tuple(NodeId(x) for x in learners)
    )
    return PaxosCore(
        cfg,
        rng=random.Random(node_id),
        persisted=persisted,
        initial_conf=conf,
        logger=RecordingLogger(NodeId(node_id), log if log is not None else []),
    )


def envelope(src: int, dst: int, body: PaxosMessage) -> Message:
    return Message(group_id=GroupId(GROUP), src=NodeId(src), dst=NodeId(dst), body=body)


def drain(c: PaxosCore) -> Ready:
    """Take and acknowledge the next Ready (an empty one if nothing is pending)."""
    rd = c.ready()
    c.advance(rd)
    return rd


def bodies(rd: Ready, kind: type | None = None, dst: int | None = None) -> list[Any]:
    return [
        m.body
        for m in rd.messages
        if (kind is None or isinstance(m.body, kind)) and (dst is None or m.dst == dst)
    ]
