"""Small helpers for driving one RaftCore by hand (etcd's raft_paper_test style)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any, TypeVar

from support.cluster import RecordingLogger

from consensus.api import CoreConfig, PersistedState, Ready
from consensus.raft import RaftCore
from consensus.raft.messages import RequestVoteResponse
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Index,
    Message,
    NodeId,
    Term,
)

GROUP = GroupId(1)
T = TypeVar("T")


def new_core(
    node_id: int = 1,
    voters: Iterable[int] = (1, 2, 3),
    *,
    learners: Iterable[int] = (),
    seed: int = 0,
    persisted: PersistedState | None = None,
    lines: list[str] | None = None,
    **config: Any,
) -> RaftCore:
    """A core with the paper's defaults: no PreVote, no CheckQuorum unless asked."""
    settings: dict[str, Any] = {"pre_vote": False, "check_quorum": False}
    settings.update(config)
    cfg = CoreConfig(node_id=NodeId(node_id), group_id=GROUP, **settings)
    return RaftCore(
        cfg,
        rng=random.Random(seed),
        persisted=persisted,
        initial_conf=ConfState(
            voters=tuple(NodeId(v) for v in sorted(voters)),
            learners=tuple(NodeId(v) for v in sorted(learners)),
        ),
        logger=RecordingLogger(NodeId(node_id), lines if lines is not None else []),
    )


def env(src: int, dst: int, body: object) -> Message:
    return Message(group_id=GROUP, src=NodeId(src), dst=NodeId(dst), body=body)


def flush(core: RaftCore) -> Ready:
    """Take the pending Ready and acknowledge it (as if persisted, sent and applied)."""
    rd = core.ready()
    core.advance(rd)
    return rd


def sent(rd: Ready, kind: type[T]) -> list[tuple[int, T]]:
    """(destination, body) of every message of ``kind`` in ``rd``."""
    return [(int(m.dst), m.body) for m in rd.messages if isinstance(m.body, kind)]


def log_of(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    return tuple(
        Entry(
            index=Index(start + i), term=Term(t), kind=EntryKind.NORMAL, data=b"e%d" % (start + i)
        )
        for i, t in enumerate(terms)
    )


def persisted(term: int, *terms: int, vote: int = 0, commit: int = 0) -> PersistedState:
    return PersistedState(
        hard_state=HardState(term=Term(term), vote=NodeId(vote), commit=Index(commit)),
        entries=log_of(*terms),
    )


def make_leader(core: RaftCore, voters: Iterable[int] = (2, 3)) -> Ready:
    """Campaign (without PreVote) and feed grants from ``voters``; returns the Ready taken
    after winning (it holds the no-op append)."""
    core.campaign()
    flush(core)
    term = core.status().term
    for v in voters:
        core.step(env(v, int(core.status().node_id), RequestVoteResponse(term=term, granted=True)))
    return flush(core)
