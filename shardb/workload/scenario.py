"""Scenario files: a TOML script of one benchmark or fault-injection run.

::

    name = "leader-kill"
    seed = 7

    [cluster]               # nodes, ranges, backend (raft|paxos), durability (fsync|nofsync)
    nodes = 3
    ranges = 4

    [[phases]]              # in order; kind load (runs to completion) or run (duration_s)
    kind = "load"
    workload = "ycsb-a"     # ycsb-a..ycsb-f, ycsb (properties only), register, kv
    clients = 16

    [[phases]]
    kind = "run"
    workload = "register"
    duration_s = 60
    clients = 8
    target = 500            # ops/s: open loop; omit for closed loop
    properties = { keys = 5 }

    [[faults]]              # at_s counts from the start of the first run phase
    at_s = 20
    kind = "kill_leader"    # kill_leader|pause_node|partition|slow_link|clock_skew|restart
    range = 1               # every other key is an argument of the fault kind
    heal_after_s = 10

    [checks]
    linearizable = true
    no_lost_writes = true
    row_count = { usertable = 1000 }

    [sweep]                 # optional: one run per combination, in file order
    clients = [1, 4, 16]

Everything is validated up front, with the file and the dotted path of the offending key in
the message: unknown keys, wrong types, values out of range, node ids outside the cluster,
and faults that start or heal after the last run phase ends.
"""

from __future__ import annotations

import enum
import itertools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from shardb.workload.ycsb import WORKLOADS, CoreWorkloadConfig, WorkloadConfigError

BACKENDS: Final = ("raft", "paxos")
DURABILITY: Final = ("fsync", "nofsync")
CONSISTENCY: Final = ("linearizable", "lease", "stale")
NODE_ROLES: Final = ("leader", "follower")


class ScenarioError(ValueError):
    """The scenario file is invalid; the message says where and why."""


class PhaseKind(enum.Enum):
    LOAD = "load"
    RUN = "run"


class FaultKind(enum.Enum):
    KILL_LEADER = "kill_leader"
    """kill -9 the leader of ``range``; ``heal_after_s`` restarts it."""
    PAUSE_NODE = "pause_node"
    """SIGSTOP ``node``; ``heal_after_s`` sends SIGCONT."""
    PARTITION = "partition"
    """Cut the network: ``groups`` (full partition), ``links`` (partial) or ``isolate``."""
    SLOW_LINK = "slow_link"
    """Add ``delay_ms`` (+- ``jitter_ms``) to ``links`` or to every link of ``node``."""
    CLOCK_SKEW = "clock_skew"
    """Shift ``node``'s clock by ``skew_ms``."""
    RESTART = "restart"
    """kill -9 ``node`` (or "all") and start it again after ``heal_after_s`` (default 0)."""


NodeRef = int | str
"""A node id (1..nodes), or "leader"/"follower" of the fault's ``range``."""

ArgValue = int | float | str | tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSpec:
    nodes: int = 3
    ranges: int = 1
    backend: str = "raft"
    durability: str = "fsync"
    replication: int | None = None
    """Replicas per range (at most ``nodes``); None = ``min(3, nodes)``."""

    @property
    def replicas_per_range(self) -> int:
        return min(3, self.nodes) if self.replication is None else self.replication


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSpec:
    kind: PhaseKind
    workload: str
    clients: int = 1
    duration_s: float | None = None
    """Run phases only."""
    target: float | None = None
    """Ops/s over all clients (open loop); None = closed loop."""
    properties: tuple[tuple[str, str], ...] = ()
    """Workload properties (YCSB ``-p`` style for ycsb workloads), as text."""
    consistency: str = "linearizable"
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    at_s: float
    kind: FaultKind
    args: tuple[tuple[str, ArgValue], ...] = ()
    heal_after_s: float | None = None

    def arg(self, name: str, default: ArgValue | None = None) -> ArgValue | None:
        for key, value in self.args:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSpec:
    linearizable: bool = False
    no_lost_writes: bool = False
    row_count: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str = ""
    seed: int = 0
    cluster: ClusterSpec = ClusterSpec()
    phases: tuple[PhaseSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    checks: CheckSpec = CheckSpec()
    sweep: tuple[tuple[str, tuple[int | str | float, ...]], ...] = ()

    @property
    def run_duration_s(self) -> float:
        """Length of the fault timeline: the run phases' durations, back to back."""
        return math.fsum(p.duration_s or 0.0 for p in self.phases if p.kind is PhaseKind.RUN)

    def expand(self) -> tuple[Scenario, ...]:
        """One scenario per combination of sweep values (the first parameter varies slowest)."""
        if not self.sweep:
            return (self,)
        names = [name for name, _ in self.sweep]
        out: list[Scenario] = []
        for combo in itertools.product(*(values for _, values in self.sweep)):
            scenario = replace(self, sweep=())
            suffix = []
            for name, value in zip(names, combo, strict=True):
                scenario = _apply_sweep(scenario, name, value)
                suffix.append(f"{name}={value}")
            out.append(replace(scenario, name=f"{self.name}[{','.join(suffix)}]"))
        return tuple(out)


SWEEP_PARAMETERS: Final = ("backend", "nodes", "ranges", "clients", "target", "durability")


def _apply_sweep(scenario: Scenario, name: str, value: int | str | float) -> Scenario:
    cluster = scenario.cluster
    match name:
        case "backend":
            return replace(scenario, cluster=replace(cluster, backend=str(value)))
        case "durability":
            return replace(scenario, cluster=replace(cluster, durability=str(value)))
        case "nodes":
            return replace(scenario, cluster=replace(cluster, nodes=int(value)))
        case "ranges":
            return replace(scenario, cluster=replace(cluster, ranges=int(value)))
        case "clients":
            phases = tuple(
                replace(p, clients=int(value)) if p.kind is PhaseKind.RUN else p
                for p in scenario.phases
            )
            return replace(scenario, phases=phases)
        case _:  # target
            phases = tuple(
                replace(p, target=float(value)) if p.kind is PhaseKind.RUN else p
                for p in scenario.phases
            )
            return replace(scenario, phases=phases)


# ---------------------------------------------------------------------------------------------
# Parsing


class _Reader:
    """Typed access to one TOML table, tracking which keys were used."""

    def __init__(self, table: Mapping[str, Any], path: str, source: str) -> None:
        self.table = table
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def fail(self, key: str | None, message: str) -> ScenarioError:
        where = self.path if key is None else (f"{self.path}.{key}" if self.path else key)
        return ScenarioError(f"{self.source}: {where or '<top>'}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.table.get(key)

    def string(self, key: str, default: str | None = None, *, choices: Sequence[str] = ()) -> str:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise self.fail(key, "is required")
            return default
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0) -> int:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise self.fail(key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, *, positive: bool = False) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise self.fail(key, f"must be a {'positive' if positive else 'non-negative'} number")
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def subtable(self, key: str) -> _Reader:
        value = self.raw(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return _Reader(value, f"{self.path}.{key}" if self.path else key, self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(None, f"unknown key(s): {', '.join(unknown)}")


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    return parse_scenario(path.read_text(encoding="utf-8"), source=str(path))


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    top = _Reader(data, "", source)
    name = top.string("name", Path(source).stem if source != "<scenario>" else None)
    description = top.string("description", "")
    seed = top.integer("seed", 0)
    cluster = _parse_cluster(top.subtable("cluster"))
    phases = _parse_phases(top, cluster)
    scenario = Scenario(
        name=name,
        description=description,
        seed=seed,
        cluster=cluster,
        phases=phases,
    )
    faults = _parse_faults(top, scenario)
    checks = _parse_checks(top.subtable("checks"), phases)
    sweep = _parse_sweep(top.subtable("sweep"))
    top.finish()
    scenario = replace(scenario, faults=faults, checks=checks, sweep=sweep)
    if sweep:
        # A swept cluster shape or duration must still fit every fault (node ids, ranges).
        for variant in scenario.expand():
            _check_cluster(variant.cluster, f"{source} ({variant.name})")
            _parse_faults(top, variant)
    return scenario


def _parse_cluster(r: _Reader) -> ClusterSpec:
    nodes = r.integer("nodes", 3, minimum=1)
    cluster = ClusterSpec(
        nodes=nodes,
        ranges=r.integer("ranges", 1, minimum=1),
        backend=r.string("backend", "raft", choices=BACKENDS),
        durability=r.string("durability", "fsync", choices=DURABILITY),
        replication=r.integer("replication", minimum=1) if r.has("replication") else None,
    )
    r.finish()
    _check_cluster(cluster, r.source)
    return cluster


def _check_cluster(cluster: ClusterSpec, source: str) -> None:
    if cluster.replicas_per_range > cluster.nodes:
        raise ScenarioError(
            f"{source}: cluster.replication: {cluster.replicas_per_range} replicas need at least "
            f"as many nodes (have {cluster.nodes})"
        )


_YCSB_ALIASES: Final = {f"ycsb-{name[-1]}": name for name in WORKLOADS}
WORKLOAD_NAMES: Final = (*sorted(_YCSB_ALIASES), "ycsb", "register", "kv")


def _property_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _parse_phases(top: _Reader, cluster: ClusterSpec) -> tuple[PhaseSpec, ...]:
    del cluster
    raw = top.raw("phases")
    if not isinstance(raw, list) or not raw:
        raise top.fail("phases", "at least one [[phases]] table is required")
    phases: list[PhaseSpec] = []
    for index, table in enumerate(raw):
        r = _Reader(table, f"phases[{index}]", top.source)
        kind = PhaseKind(r.string("kind", choices=[k.value for k in PhaseKind]))
        workload = r.string("workload", choices=WORKLOAD_NAMES)
        props_reader = r.subtable("properties")
        properties: list[tuple[str, str]] = []
        for key in props_reader.table:
            text = _property_text(props_reader.raw(key))
            if text is None:
                raise props_reader.fail(key, "must be a string, number or boolean")
            properties.append((key, text))
        duration = r.number("duration_s", positive=True)
        if kind is PhaseKind.RUN and duration is None:
            raise r.fail("duration_s", "is required for a run phase")
        if kind is PhaseKind.LOAD and duration is not None:
            raise r.fail("duration_s", "a load phase runs until every record is inserted")
        target = r.number("target", positive=True)
        phase = PhaseSpec(
            kind=kind,
            workload=workload,
            clients=r.integer("clients", 1, minimum=1),
            duration_s=duration,
            target=target,
            properties=tuple(properties),
            consistency=r.string("consistency", "linearizable", choices=CONSISTENCY),
            name=r.string("name", ""),
        )
        r.finish()
        if workload.startswith("ycsb"):
            _check_ycsb_properties(phase, r)
        elif workload in ("register", "kv"):
            _check_history_properties(phase, props_reader)
        phases.append(phase)
    return tuple(phases)


def ycsb_properties(phase: PhaseSpec) -> dict[str, str]:
    """The YCSB properties of a ycsb phase: the standard set, then the phase's overrides."""
    base = dict(WORKLOADS[_YCSB_ALIASES[phase.workload]]) if phase.workload != "ycsb" else {}
    base.update(phase.properties)
    return base


def _check_ycsb_properties(phase: PhaseSpec, r: _Reader) -> None:
    try:
        config = CoreWorkloadConfig.from_properties(ycsb_properties(phase))
    except WorkloadConfigError as exc:
        raise r.fail("properties", str(exc)) from None
    if config.ignored and any(k in dict(phase.properties) for k in config.ignored):
        unknown = [k for k in config.ignored if k in dict(phase.properties)]
        raise r.fail("properties", f"unknown YCSB propert(ies): {', '.join(unknown)}")


_HISTORY_PROPERTIES: Final = {
    "register": ("keys", "read_proportion", "write_proportion", "cas_proportion"),
    "kv": ("keys", "distribution"),
}


def _check_history_properties(phase: PhaseSpec, r: _Reader) -> None:
    allowed = _HISTORY_PROPERTIES[phase.workload]
    for key, value in phase.properties:
        if key not in allowed:
            raise r.fail(key, f"unknown {phase.workload} property (allowed: {', '.join(allowed)})")
        if key == "keys" and not (value.isdigit() and int(value) >= 1):
            raise r.fail(key, f"must be a positive integer, got {value!r}")
        if key == "distribution" and value not in ("uniform", "zipfian"):
            raise r.fail(key, f"must be uniform or zipfian, got {value!r}")
        if key.endswith("_proportion"):
            try:
                ok = 0.0 <= float(value) <= 1.0
            except ValueError:
                ok = False
            if not ok:
                raise r.fail(key, f"must be a number in [0, 1], got {value!r}")


_FAULT_ARGS: Final[Mapping[FaultKind, tuple[str, ...]]] = {
    FaultKind.KILL_LEADER: ("range",),
    FaultKind.PAUSE_NODE: ("node", "range"),
    FaultKind.PARTITION: ("groups", "links", "isolate", "range"),
    FaultKind.SLOW_LINK: ("links", "node", "range", "delay_ms", "jitter_ms"),
    FaultKind.CLOCK_SKEW: ("node", "range", "skew_ms"),
    FaultKind.RESTART: ("node", "range"),
}


def _parse_faults(top: _Reader, scenario: Scenario) -> tuple[FaultSpec, ...]:
    raw = top.raw("faults")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise top.fail("faults", "must be an array of tables ([[faults]])")
    end_s = scenario.run_duration_s
    faults: list[FaultSpec] = []
    for index, table in enumerate(raw):
        r = _Reader(table, f"faults[{index}]", top.source)
        at_s = r.number("at_s")
        if at_s is None:
            raise r.fail("at_s", "is required")
        kind = FaultKind(r.string("kind", choices=[k.value for k in FaultKind]))
        heal = r.number("heal_after_s", positive=True)
        if at_s >= end_s:
            raise r.fail("at_s", f"{at_s}s is at or after the end of the run phases ({end_s}s)")
        if heal is not None and at_s + heal > end_s:
            raise r.fail(
                "heal_after_s",
                f"heals at {at_s + heal}s, after the run phases end ({end_s}s); "
                "the checks would run with the fault still active",
            )
        args = _parse_fault_args(kind, r, scenario.cluster)
        r.finish()
        faults.append(FaultSpec(at_s=at_s, kind=kind, args=args, heal_after_s=heal))
    return tuple(sorted(faults, key=lambda f: f.at_s))


def _node_ref(r: _Reader, key: str, cluster: ClusterSpec, *, allow_all: bool = False) -> NodeRef:
    value = r.raw(key)
    roles = (*NODE_ROLES, "all") if allow_all else NODE_ROLES
    if isinstance(value, str) and value in roles:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise r.fail(key, f"must be a node id or one of {', '.join(roles)}; got {value!r}")
    if not 1 <= value <= cluster.nodes:
        raise r.fail(key, f"node {value} is not in the cluster (nodes 1..{cluster.nodes})")
    return value


def _node_lists(
    r: _Reader, key: str, cluster: ClusterSpec, *, pairs: bool
) -> tuple[tuple[int, ...], ...]:
    value = r.raw(key)
    if not isinstance(value, list) or not value:
        raise r.fail(key, "must be a non-empty list of lists of node ids")
    out: list[tuple[int, ...]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or not item
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in item)
        ):
            raise r.fail(key, f"each entry must be a non-empty list of node ids, got {item!r}")
        for node in item:
            if not 1 <= node <= cluster.nodes:
                raise r.fail(key, f"node {node} is not in the cluster (nodes 1..{cluster.nodes})")
        if pairs and (len(item) != 2 or item[0] == item[1]):
            raise r.fail(key, f"a link is two different node ids, got {item!r}")
        out.append(tuple(item))
    if not pairs:
        seen = [n for group in out for n in group]
        if len(seen) != len(set(seen)):
            raise r.fail(key, "a node appears in more than one group")
        if len(out) < 2:
            raise r.fail(key, "a partition needs at least two groups")
    return tuple(out)


def _parse_fault_args(
    kind: FaultKind, r: _Reader, cluster: ClusterSpec
) -> tuple[tuple[str, ArgValue], ...]:
    allowed = _FAULT_ARGS[kind]
    for key in r.table:
        if key not in ("at_s", "kind", "heal_after_s") and key not in allowed:
            raise r.fail(key, f"not an argument of {kind.value} (allowed: {', '.join(allowed)})")
    args: dict[str, ArgValue] = {}
    if r.has("range"):
        rng = r.integer("range", minimum=1)
        if rng > cluster.ranges:
            raise r.fail("range", f"range {rng} does not exist (ranges 1..{cluster.ranges})")
        args["range"] = rng
    match kind:
        case FaultKind.KILL_LEADER:
            pass
        case FaultKind.PAUSE_NODE | FaultKind.CLOCK_SKEW | FaultKind.RESTART:
            if not r.has("node"):
                raise r.fail("node", "is required")
            args["node"] = _node_ref(r, "node", cluster, allow_all=kind is FaultKind.RESTART)
            if kind is FaultKind.CLOCK_SKEW:
                skew = r.raw("skew_ms")
                if isinstance(skew, bool) or not isinstance(skew, int) or skew == 0:
                    raise r.fail("skew_ms", f"must be a non-zero integer, got {skew!r}")
                args["skew_ms"] = skew
        case FaultKind.PARTITION:
            given = [k for k in ("groups", "links", "isolate") if r.has(k)]
            if len(given) != 1:
                raise r.fail(None, "a partition needs exactly one of groups, links, isolate")
            if given[0] == "isolate":
                args["isolate"] = _node_ref(r, "isolate", cluster)
            else:
                args[given[0]] = _node_lists(r, given[0], cluster, pairs=given[0] == "links")
        case FaultKind.SLOW_LINK:
            given = [k for k in ("links", "node") if r.has(k)]
            if len(given) != 1:
                raise r.fail(None, "slow_link needs exactly one of links, node")
            if given[0] == "node":
                args["node"] = _node_ref(r, "node", cluster)
            else:
                args["links"] = _node_lists(r, "links", cluster, pairs=True)
            args["delay_ms"] = r.integer("delay_ms", minimum=1)
            if r.has("jitter_ms"):
                args["jitter_ms"] = r.integer("jitter_ms", minimum=0)
    return tuple(sorted(args.items()))


def _parse_checks(r: _Reader, phases: Sequence[PhaseSpec]) -> CheckSpec:
    workloads = {p.workload for p in phases if p.kind is PhaseKind.RUN}
    linearizable = r.boolean("linearizable", False)
    if linearizable and not workloads & {"register", "kv"}:
        raise r.fail("linearizable", "needs a run phase with a register or kv workload")
    lost = r.boolean("no_lost_writes", False)
    if lost and not workloads & {"register", "kv"}:
        raise r.fail("no_lost_writes", "needs a run phase with a register or kv workload")
    counts = r.subtable("row_count")
    row_count: list[tuple[str, int]] = []
    for table in counts.table:
        row_count.append((table, counts.integer(table, minimum=0)))
    r.finish()
    return CheckSpec(
        linearizable=linearizable, no_lost_writes=lost, row_count=tuple(sorted(row_count))
    )


def _parse_sweep(r: _Reader) -> tuple[tuple[str, tuple[int | str | float, ...]], ...]:
    out: list[tuple[str, tuple[int | str | float, ...]]] = []
    for key in r.table:
        if key not in SWEEP_PARAMETERS:
            raise r.fail(key, f"cannot sweep it (can sweep: {', '.join(SWEEP_PARAMETERS)})")
        values = r.raw(key)
        if not isinstance(values, list) or not values:
            raise r.fail(key, "must be a non-empty list")
        for value in values:
            ok = (
                value in (BACKENDS if key == "backend" else DURABILITY)
                if key in ("backend", "durability")
                else (
                    not isinstance(value, bool)
                    and isinstance(value, int | float)
                    and value > 0
                    and (key == "target" or isinstance(value, int))
                )
            )
            if not ok:
                raise r.fail(key, f"bad value {value!r}")
        out.append((key, tuple(values)))
    return tuple(out)
