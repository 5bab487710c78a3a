"""Deterministic cluster simulation of the consensus cores (FoundationDB / TigerBeetle style).

One seed drives network faults, crashes, clock skew, the client workload and every core;
safety checkers run after every step and a failing seed replays exactly with the command
printed in its ``Violation``. Entry points: ``run(SimConfig(...))`` and ``shardb sim``.

The fault profiles (``consensus.sim.faults``) are built to produce the situations in which
real bugs matter, and ``tests/sim/test_broken_variants.py`` holds them to it: deliberately
broken Raft and Multi-Paxos cores must be caught within a fixed seed range. The
``elections`` profile churns leadership (Raft Figure 8, split votes, crashes right after a
vote or an acknowledgement); the ``membership`` profile runs an operator
(``consensus.sim.operator``) that changes membership and transfers leadership while spare
nodes wait to join with an empty configuration.

``consensus.sim.multigroup`` (``run_multi(MultiSimConfig(groups=G, backend="mixed"))``,
``shardb sim --groups G``) runs every node as a ``MultiGroupHost`` with G groups, persists
each merged ``HostReady`` as one disk record (``HostDisk``), runs every checker per group and
checks that all groups quiesce and the network then carries only ``NodeHeartbeat``s.
"""

from consensus.sim.checkers import TRAITS, BackendTraits, InvariantViolation, SafetyChecker
from consensus.sim.disk import DiskWrite, SimDisk
from consensus.sim.eventloop import Violation
from consensus.sim.faults import Churn, ChurnMoment, FaultKind, FaultProfile, FaultTiming
from consensus.sim.hostdisk import HostDisk
from consensus.sim.hostnode import HostNode
from consensus.sim.kv import ApplyResult, Command, KVStore, Op
from consensus.sim.linearizability import CheckResult, KeyResult, Operation, Outcome, check_history
from consensus.sim.multigroup import MultiSimConfig, MultiSimResult, SimBackend, run_multi
from consensus.sim.network import NetworkError, SimNetwork
from consensus.sim.node import CrashPoint, CrashTrigger, SimNode
from consensus.sim.operator import Operator, OperatorStats
from consensus.sim.runner import SimConfig, SimResult, Simulation, run
from consensus.sim.workload import ClientOp, ReadPath, Workload, WorkloadConfig

__all__ = [
    "TRAITS",
    "ApplyResult",
    "BackendTraits",
    "CheckResult",
    "Churn",
    "ChurnMoment",
    "ClientOp",
    "Command",
    "CrashPoint",
    "CrashTrigger",
    "DiskWrite",
    "FaultKind",
    "FaultProfile",
    "FaultTiming",
    "HostDisk",
    "HostNode",
    "InvariantViolation",
    "KVStore",
    "KeyResult",
    "MultiSimConfig",
    "MultiSimResult",
    "NetworkError",
    "Op",
    "Operation",
    "Operator",
    "OperatorStats",
    "Outcome",
    "ReadPath",
    "SafetyChecker",
    "SimBackend",
    "SimConfig",
    "SimDisk",
    "SimNetwork",
    "SimNode",
    "SimResult",
    "Simulation",
    "Violation",
    "Workload",
    "WorkloadConfig",
    "check_history",
    "run",
    "run_multi",
]
