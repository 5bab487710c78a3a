"""Interaction scripts: drive consensus cores by hand and print everything they do.

After etcd-io/raft's ``testdata/*.txt`` (datadriven). Scripts live in
``tests/interaction/testdata/<backend>/*.txt``; ``test_interaction.py`` runs each file against
``consensus.backends.core_factory(<backend>)`` and compares the output with the file;
``pytest tests/interaction --rewrite`` regenerates the outputs in place for review as a diff.

File format (see ``script.py``)::

    # comments and blank lines are kept as they are
    campaign 1
    ----
    INFO 1 became_pre_candidate term=0 leader=0
    ...

One command per block; its output runs to the next blank line. ``# xfail: <reason>`` before
the first command marks a script that shows a known core bug (strict xfail).

Nothing happens behind the script's back: commands change the cores, and only
``process-ready`` / ``stabilize`` carry out their ``Ready`` (persist into an in-memory store,
send onto one FIFO network, apply to a list state machine, advance) and only
``deliver-msgs`` / ``stabilize`` deliver messages. Every core gets its rng from
``random.Random(f"{seed}/{node}/{incarnation}")``, so an output is stable for a seed.

Commands (node ids are integers; ``[...]`` is optional)
-------------------------------------------------------
``add-nodes N [voters=(1,2,3)] [learners=(4)] [seed=0] [<option>=<value> ...]``
    Create N nodes with the next free ids. The first call bootstraps the group: ``voters``
    defaults to every new node. Later calls create empty nodes that join through a membership
    change (they learn the configuration from the leader) unless ``voters`` is given. Options
    (first call only; they apply to every node): ``pre_vote``, ``check_quorum``,
    ``election_timeout``, ``heartbeat_interval``, ``max_msg_bytes``, ``max_inflight``,
    ``snapshot_chunk``, ``max_uncommitted_bytes``, ``lease_drift``, or any ``CoreConfig``
    field by its full name.
``campaign N``                      start an election on N now.
``tick N [COUNT]``                  tick N COUNT times (default 1).
``tick-heartbeat N``                tick N ``heartbeat_interval`` times.
``tick-election N``                 tick N ``2 * election_timeout - 1`` times: a follower's
                                    randomized timeout in [T, 2T) expires exactly once, a
                                    leader runs exactly one CheckQuorum (if that deposes it,
                                    the remaining ticks may time it out as a follower too;
                                    use ``tick N COUNT`` for exact control).
``process-ready N...``              carry out one Ready of each N (if it has one).
``deliver-msgs N... [drop=true] [count=K]``
                                    deliver (or drop) the messages queued for each N, in order
                                    (only the first K of them with ``count``).
``stabilize [N...]``                until quiet: carry out the Ready of every node (of N...),
                                    then deliver every queued message, per node in id order.
``propose N DATA``                  propose DATA; prints the ``Proposed`` index and term.
``propose-conf-change N OPS...``    ``v4`` add voter 4, ``l5`` add learner 5, ``r2`` remove 2;
                                    no ops = leave a joint configuration explicitly.
``read-index N ID [lease]``         a SAFE (or LEASE) read barrier with request id ID.
``compact N INDEX``                 snapshot N's state machine at INDEX and compact its log.
``transfer-leadership N TARGET``    ask leader N to hand over to TARGET.
``report-unreachable N PEER``       tell N that a message to PEER may have been lost.
``isolate N``                       cut every link to and from N (adds to other cuts).
``partition A... | B... [| C...]``  cut every link between different groups (adds).
``heal``                            restore every link.
``crash N``                         stop N: its in-memory state, unprocessed Ready and the
                                    messages queued for it are lost; storage survives.
``restart N``                       rebuild N's core from what it persisted.
``status N``                        role, term, leader, commit, applied, log bounds,
                                    configuration, and the leader's per-peer progress.
``raft-log N`` / ``log N``          N's persisted snapshot, hard state and entries.
``applied N``                       N's applied index and state machine (NORMAL commands).
``log-level debug|info|none``       which core log lines to print (default info).

Output: core log lines as ``INFO 1 became_leader term=2 leader=1``; Readys as
``> N handling Ready`` followed by the sections in processing order (a ``SoftState`` line
when the role or known leader changed); deliveries as ``> N receiving messages`` followed by
each message and the log lines it caused. A message on a cut link is shown with
``(dropped: partition)``, one to a crashed node with ``(dropped: N is down)``. A core error
that the API documents (``NotLeader``, ``ProposalDropped``, ``UsageError``) prints as
``error: <Name>: <message>``; anything else fails the test. After every command the driver
checks State Machine Safety (applied histories are prefixes of each other, Raft §5.4.3) and
Election Safety (one leader per term, §5.2) and fails the test if either breaks.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# pytest puts tests/ on sys.path: tests/ itself is not a package.
from support.cluster import GROUP, MemStorage, Node, decode_state, encode_state

from consensus.api import (
    ChangeKind,
    ChangeOp,
    ConsensusCore,
    CoreConfig,
    MembershipChange,
    NotLeader,
    ProposalDropped,
    ReadMode,
    Role,
    UsageError,
)
from consensus.backends import core_factory
from consensus.types import ConfState, EntryKind, Index, Message, NodeId

from .render import Renderer, format_bytes, format_log_value
from .script import Script, parse, render

LEVELS = {"debug": 0, "info": 1, "warning": 2, "none": 3}
MAX_STABILIZE_ROUNDS = 10_000

_OPTION_ALIASES = {
    "election_timeout": "election_timeout_ticks",
    "heartbeat_interval": "heartbeat_interval_ticks",
    "max_inflight": "max_inflight_msgs",
    "snapshot_chunk": "max_snapshot_chunk_bytes",
    "lease_drift": "lease_clock_drift_ratio",
}
_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(CoreConfig)}
_TOKEN = re.compile(r"\S+=\([^)]*\)|\([^)]*\)|\S+")


class CommandError(Exception):
    """The script is wrong (unknown command, bad argument): fails the test."""


class SafetyViolation(AssertionError):
    """The cores did something no correct implementation may do."""


class ScriptLogger:
    """``consensus.api.Logger`` that formats lines for golden files into the env's sink."""

    def __init__(self, node_id: NodeId, env: InteractionEnv) -> None:
        self._node_id = node_id
        self._env = env

    def _emit(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self._env.log(level, self._node_id, event, kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)


class InteractionEnv:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.factory = core_factory(backend)
        self.render = Renderer(backend)
        self.seed = 0
        self.config_overrides: dict[str, Any] = {}
        self.nodes: dict[NodeId, Node] = {}
        self.initial_conf: dict[NodeId, ConfState] = {}
        self.incarnation: dict[NodeId, int] = {}
        self.network: list[Message] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.level = LEVELS["info"]
        self.out: list[str] = []
        self.indent = ""
        self.soft: dict[NodeId, tuple[Role, NodeId]] = {}
        self.leaders_by_term: dict[int, NodeId] = {}
        self._commands: dict[str, Callable[[list[str]], None]] = {
            "add-nodes": self._cmd_add_nodes,
            "campaign": self._cmd_campaign,
            "tick": self._cmd_tick,
            "tick-heartbeat": self._cmd_tick_heartbeat,
            "tick-election": self._cmd_tick_election,
            "process-ready": self._cmd_process_ready,
            "deliver-msgs": self._cmd_deliver_msgs,
            "stabilize": self._cmd_stabilize,
            "propose": self._cmd_propose,
            "propose-conf-change": self._cmd_propose_conf_change,
            "read-index": self._cmd_read_index,
            "compact": self._cmd_compact,
            "transfer-leadership": self._cmd_transfer_leadership,
            "report-unreachable": self._cmd_report_unreachable,
            "isolate": self._cmd_isolate,
            "partition": self._cmd_partition,
            "heal": self._cmd_heal,
            "crash": self._cmd_crash,
            "restart": self._cmd_restart,
            "status": self._cmd_status,
            "raft-log": self._cmd_log,
            "log": self._cmd_log,
            "applied": self._cmd_applied,
            "log-level": self._cmd_log_level,
        }

    # ================================================================== running

    def run(self, command: str) -> list[str]:
        """Run one command line and return its output lines (never empty)."""
        self.out = []
        self.indent = ""
        tokens = _TOKEN.findall(command)
        if not tokens:
            raise CommandError("empty command")
        handler = self._commands.get(tokens[0])
        if handler is None:
            raise CommandError(f"unknown command {tokens[0]!r}")
        try:
            handler(tokens[1:])
        except (NotLeader, ProposalDropped, UsageError) as exc:
            self.say(f"error: {type(exc).__name__}: {exc}")
        self.check_safety()
        return self.out or ["ok"]

    def say(self, line: str) -> None:
        self.out.append(self.indent + line)

    def log(self, level: str, node: NodeId, event: str, kw: dict[str, Any]) -> None:
        if LEVELS[level] < self.level:
            return
        args = "".join(f" {k}={format_log_value(v)}" for k, v in kw.items())
        self.say(f"{level.upper()} {node} {event}{args}")

    # ================================================================== helpers

    def node(self, token: str) -> Node:
        try:
            node_id = NodeId(int(token))
        except ValueError as exc:
            raise CommandError(f"not a node id: {token!r}") from exc
        if node_id not in self.nodes:
            raise CommandError(f"no node {node_id}")
        return self.nodes[node_id]

    def live_core(self, token: str) -> ConsensusCore:
        node = self.node(token)
        if not node.alive:
            raise CommandError(f"node {node.node_id} is down")
        return node.core

    def config(self, node_id: NodeId) -> CoreConfig:
        return dataclasses.replace(
            CoreConfig(node_id=node_id, group_id=GROUP), **self.config_overrides
        )

    def build(self, node_id: NodeId, storage: MemStorage) -> Node:
        incarnation = self.incarnation.get(node_id, -1) + 1
        self.incarnation[node_id] = incarnation
        core = self.factory(
            self.config(node_id),
            rng=random.Random(f"{self.seed}/{node_id}/{incarnation}"),
            persisted=storage.persisted_state(),
            initial_conf=self.initial_conf[node_id],
            logger=ScriptLogger(node_id, self),
        )
        node = Node(node_id=node_id, core=core, storage=storage)
        st = core.status()
        # A Ready shows the role only when it changed since the last one shown (or start).
        self.soft[node_id] = (st.role, st.leader)
        if storage.snapshot is not None:
            node.state = decode_state(storage.snapshot.data)
            node.applied_index = storage.snapshot.meta.index
        return node

    def cut(self, a: NodeId, b: NodeId) -> bool:
        return (a, b) in self.blocked

    # ================================================================== Ready and delivery

    def process_ready(self, node_id: NodeId) -> bool:
        """Carry out one Ready of ``node_id``: persist -> send -> apply -> advance."""
        node = self.nodes[node_id]
        if not node.alive:
            return False
        # A core may do work (and log) inside has_ready(); show that under the header.
        mark = len(self.out)
        self.indent = "  "
        has_ready = node.core.has_ready()
        self.indent = ""
        if not has_ready:
            return False
        early = self.out[mark:]
        del self.out[mark:]
        self.say(f"> {node_id} handling Ready")
        self.out.extend(early)
        self.indent = "  "
        rd = node.core.ready()
        node.readies += 1
        lines = self.render.ready(rd, note=self._send)
        st = node.core.status()
        soft = (st.role, st.leader)
        if self.soft.get(node_id) != soft:
            self.soft[node_id] = soft
            lines.insert(1, f"SoftState role={st.role.value} leader={st.leader}")
        node.storage.persist(rd)
        for line in lines:
            self.say(line)
        if rd.apply_snapshot is not None:
            node.state = decode_state(rd.apply_snapshot.data)
            node.applied_index = rd.apply_snapshot.meta.index
        for entry in rd.committed_entries:
            if entry.index != node.applied_index + 1:
                raise SafetyViolation(
                    f"node {node_id} applied {entry.index} after {node.applied_index}"
                )
            node.applied_index = entry.index
            if entry.kind is EntryKind.NORMAL:
                node.state.append((int(entry.index), entry.data))
        node.read_states.extend(rd.read_states)
        node.core.advance(rd)
        self.indent = ""
        return True

    def _send(self, message: Message) -> str:
        """Put ``message`` on the network; returns a note for the Ready listing."""
        if self.cut(message.src, message.dst):
            return " (dropped: partition)"
        self.network.append(message)
        return ""

    def deliver(self, node_id: NodeId, *, drop: bool = False, count: int | None = None) -> bool:
        """Deliver (or drop) the queued messages for ``node_id`` (the oldest ``count`` of
        them, or all), oldest first."""
        positions = [i for i, m in enumerate(self.network) if m.dst == node_id][:count]
        if not positions:
            return False
        mine = [self.network[i] for i in positions]
        taken = set(positions)
        self.network = [m for i, m in enumerate(self.network) if i not in taken]
        node = self.nodes.get(node_id)
        self.say(f"> {node_id} {'dropping' if drop else 'receiving'} messages")
        self.indent = "  "
        for message in mine:
            text = self.render.message(message)
            if drop:
                self.say(text)
            elif node is None:
                self.say(f"{text} (dropped: no node {node_id})")
            elif not node.alive:
                self.say(f"{text} (dropped: {node_id} is down)")
            elif self.cut(message.src, message.dst):
                self.say(f"{text} (dropped: partition)")
            else:
                self.say(text)
                node.core.step(message)
        self.indent = ""
        return True

    def stabilize(self, only: Iterable[NodeId] | None) -> None:
        chosen = sorted(only) if only is not None else sorted(self.nodes)
        for _ in range(MAX_STABILIZE_ROUNDS):
            busy = False
            for node_id in chosen:
                while self.process_ready(node_id):
                    busy = True
            queued = {m.dst for m in self.network}
            # Messages to nodes that do not exist (yet) are delivered, i.e. dropped, too.
            targets = queued & set(chosen) if only is not None else queued
            for node_id in sorted(targets):
                busy = self.deliver(node_id) or busy
            if not busy:
                return
        raise CommandError(f"no quiescence after {MAX_STABILIZE_ROUNDS} rounds")

    # ================================================================== safety

    def check_safety(self) -> None:
        """§5.4.3 State Machine Safety and §5.2 Election Safety, after every command."""
        states = sorted((len(n.state), n.node_id, n.state) for n in self.nodes.values())
        if states:
            longest = states[-1][2]
            for length, node_id, state in states:
                if longest[:length] != state:
                    raise SafetyViolation(f"node {node_id} applied a different history")
        for node_id, node in sorted(self.nodes.items()):
            if not node.alive:
                continue
            st = node.core.status()
            if st.role is Role.LEADER:
                other = self.leaders_by_term.setdefault(int(st.term), node_id)
                if other != node_id:
                    raise SafetyViolation(f"nodes {other} and {node_id} both led term {st.term}")

    # ================================================================== commands

    @staticmethod
    def _split_options(args: list[str]) -> tuple[list[str], dict[str, str]]:
        positional = [a for a in args if "=" not in a]
        options = dict(a.split("=", 1) for a in args if "=" in a)
        return positional, options

    @staticmethod
    def _ids(value: str) -> list[NodeId]:
        return [NodeId(int(x)) for x in re.split(r"[\s,]+", value.strip("()")) if x]

    def _ids_arg(self, args: list[str]) -> list[NodeId]:
        return [self.node(a).node_id for a in args]

    def _cmd_add_nodes(self, args: list[str]) -> None:
        positional, options = self._split_options(args)
        if len(positional) != 1:
            raise CommandError("usage: add-nodes N [voters=(..)] [learners=(..)] [option=value]")
        first = not self.nodes
        start = max(self.nodes, default=0) + 1
        new = [NodeId(i) for i in range(start, start + int(positional[0]))]
        if "seed" in options:
            if not first:
                raise CommandError("seed can only be set by the first add-nodes")
            self.seed = int(options.pop("seed"))
        voters = self._ids(options.pop("voters")) if "voters" in options else None
        learners = self._ids(options.pop("learners")) if "learners" in options else []
        if first:
            for key, raw in options.items():
                name = _OPTION_ALIASES.get(key, key)
                if name not in _CONFIG_FIELDS or name in ("node_id", "group_id"):
                    raise CommandError(f"unknown option {key!r}")
                kind = type(getattr(CoreConfig(node_id=NodeId(1)), name))
                value: Any = raw.lower() == "true" if kind is bool else kind(raw)
                self.config_overrides[name] = value
        elif options:
            raise CommandError("core options can only be set by the first add-nodes")
        if voters is None and first:
            voters = new
        conf = ConfState(
            voters=tuple(sorted(voters or ())), learners=tuple(sorted(NodeId(x) for x in learners))
        )
        for node_id in new:
            self.initial_conf[node_id] = conf
            self.nodes[node_id] = self.build(node_id, MemStorage())

    def _cmd_campaign(self, args: list[str]) -> None:
        self.live_core(args[0]).campaign()

    def _tick(self, token: str, count: int) -> None:
        core = self.live_core(token)
        for _ in range(count):
            core.tick()

    def _cmd_tick(self, args: list[str]) -> None:
        self._tick(args[0], int(args[1]) if len(args) > 1 else 1)

    def _cmd_tick_heartbeat(self, args: list[str]) -> None:
        self._tick(args[0], self.config(NodeId(1)).heartbeat_interval_ticks)

    def _cmd_tick_election(self, args: list[str]) -> None:
        self._tick(args[0], 2 * self.config(NodeId(1)).election_timeout_ticks - 1)

    def _cmd_process_ready(self, args: list[str]) -> None:
        for node_id in self._ids_arg(args):
            self.process_ready(node_id)

    def _cmd_deliver_msgs(self, args: list[str]) -> None:
        positional, options = self._split_options(args)
        drop = options.pop("drop", "false").lower() == "true"
        count = int(options.pop("count")) if "count" in options else None
        if options:
            raise CommandError(f"unknown options {sorted(options)}")
        for token in positional:
            self.deliver(NodeId(int(token)), drop=drop, count=count)

    def _cmd_stabilize(self, args: list[str]) -> None:
        self.stabilize(self._ids_arg(args) if args else None)

    def _cmd_propose(self, args: list[str]) -> None:
        if len(args) != 2:
            raise CommandError("usage: propose N DATA")
        proposed = self.live_core(args[0]).propose(args[1].encode())
        self.say(f"proposed index={proposed.index} term={self.render.term(proposed.term)}")

    def _cmd_propose_conf_change(self, args: list[str]) -> None:
        kinds = {"v": ChangeKind.ADD_VOTER, "l": ChangeKind.ADD_LEARNER, "r": ChangeKind.REMOVE}
        ops = []
        for op in args[1:]:
            if op[:1] not in kinds or not op[1:].isdigit():
                raise CommandError(f"bad change {op!r}: use v<id>, l<id> or r<id>")
            ops.append(ChangeOp(kind=kinds[op[0]], node=NodeId(int(op[1:]))))
        change = MembershipChange(ops=tuple(ops))
        proposed = self.live_core(args[0]).change_membership(change)
        self.say(f"proposed index={proposed.index} term={self.render.term(proposed.term)}")

    def _cmd_read_index(self, args: list[str]) -> None:
        mode = ReadMode.LEASE if args[2:] == ["lease"] else ReadMode.SAFE
        if args[2:] not in ([], ["lease"]):
            raise CommandError("usage: read-index N ID [lease]")
        self.live_core(args[0]).read_index(int(args[1]), mode=mode)

    def _cmd_compact(self, args: list[str]) -> None:
        node = self.node(args[0])
        at = Index(int(args[1]))
        data = encode_state([(i, d) for i, d in node.state if i <= at])
        self.live_core(args[0]).compact(at, data)

    def _cmd_transfer_leadership(self, args: list[str]) -> None:
        self.live_core(args[0]).transfer_leadership(NodeId(int(args[1])))

    def _cmd_report_unreachable(self, args: list[str]) -> None:
        self.live_core(args[0]).report_unreachable(NodeId(int(args[1])))

    def _cut_between(self, a: Iterable[NodeId], b: Iterable[NodeId]) -> None:
        for x in a:
            for y in b:
                if x != y:
                    self.blocked.add((x, y))
                    self.blocked.add((y, x))

    def _cmd_isolate(self, args: list[str]) -> None:
        node_id = self.node(args[0]).node_id
        self._cut_between([node_id], sorted(self.nodes))

    def _cmd_partition(self, args: list[str]) -> None:
        groups: list[list[NodeId]] = [[]]
        for token in args:
            if token == "|":
                groups.append([])
            else:
                groups[-1].append(self.node(token).node_id)
        if len(groups) < 2 or not all(groups):
            raise CommandError("usage: partition A... | B... [| C...]")
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                self._cut_between(group, other)

    def _cmd_heal(self, args: list[str]) -> None:
        self.blocked.clear()

    def _cmd_crash(self, args: list[str]) -> None:
        node = self.node(args[0])
        node.alive = False
        lost = [m for m in self.network if m.dst == node.node_id]
        self.network = [m for m in self.network if m.dst != node.node_id]
        if lost:
            self.say(f"dropped {len(lost)} queued messages for {node.node_id}")

    def _cmd_restart(self, args: list[str]) -> None:
        old = self.node(args[0])
        if old.alive:
            raise CommandError(f"node {old.node_id} is running; crash it first")
        node = self.build(old.node_id, old.storage)
        node.readies = old.readies
        self.nodes[old.node_id] = node

    def _cmd_status(self, args: list[str]) -> None:
        for line in self.render.status(self.live_core(args[0]).status()):
            self.say(line)

    def _cmd_log(self, args: list[str]) -> None:
        storage = self.node(args[0]).storage
        if storage.snapshot is not None:
            self.say(f"snapshot {self.render.snapshot(storage.snapshot)}")
        self.say(f"hard_state {self.render.hard_state(storage.hard_state)}")
        for index in sorted(storage.entries):
            self.say(self.render.entry(storage.entries[index]))

    def _cmd_applied(self, args: list[str]) -> None:
        node = self.node(args[0])
        self.say(f"applied={node.applied_index}")
        for index, data in node.state:
            self.say(f"{index} {format_bytes(data)}")
        for read in node.read_states:
            self.say(f"read id={read.request_id} index={read.index}")

    def _cmd_log_level(self, args: list[str]) -> None:
        if len(args) != 1 or args[0] not in LEVELS:
            raise CommandError(f"usage: log-level {'|'.join(LEVELS)}")
        self.level = LEVELS[args[0]]


def run_script(backend: str, script: Script) -> list[list[str]]:
    """Run every block of ``script`` on a fresh env; one output per block."""
    env = InteractionEnv(backend)
    outputs = []
    for block in script.blocks:
        try:
            outputs.append(env.run(block.command))
        except SafetyViolation as exc:
            # Kept as its own type so a script showing a known bug can be a precise xfail.
            raise SafetyViolation(f"line {block.line_no}: {block.command!r}: {exc}") from exc
        except Exception as exc:
            raise CommandError(f"line {block.line_no}: {block.command!r}: {exc}") from exc
    return outputs


def check_file(path: Path, *, rewrite: bool = False) -> str | None:
    """Run the script at ``path`` (backend = its directory's name). Returns None if the
    output matches the file, else a unified diff (expected -> actual); with ``rewrite`` the
    file is overwritten with the actual output instead and None is returned."""
    expected = path.read_text()
    script = parse(expected)
    actual = render(script, run_script(path.parent.name, script))
    if actual == expected:
        return None
    if rewrite:
        path.write_text(actual)
        return None
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{path.name} (expected)",
            tofile=f"{path.name} (actual)",
        )
    )
