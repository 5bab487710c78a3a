"""Deterministic cluster simulation of the consensus cores (FoundationDB / TigerBeetle style).

One seed drives network faults, crashes, clock skew, the client workload and every core;
safety checkers run after every step and a failing seed replays exactly with the command
printed in its ``Violation``. Entry points: ``run(SimConfig(...))`` and ``shardb sim``.
"""

from consensus.sim.checkers import TRAITS, BackendTraits, InvariantViolation, SafetyChecker
from consensus.sim.disk import DiskWrite, SimDisk
from consensus.sim.faults import FaultKind, FaultProfile
from consensus.sim.kv import ApplyResult, Command, KVStore, Op
from consensus.sim.linearizability import CheckResult, KeyResult, Operation, Outcome, check_history
from consensus.sim.network import NetworkError, SimNetwork
from consensus.sim.node import CrashPoint, SimNode
from consensus.sim.runner import SimConfig, SimResult, Simulation, Violation, run
from consensus.sim.workload import ClientOp, ReadPath, Workload, WorkloadConfig

__all__ = [
    "TRAITS",
    "ApplyResult",
    "BackendTraits",
    "CheckResult",
    "ClientOp",
    "Command",
    "CrashPoint",
    "DiskWrite",
    "FaultKind",
    "FaultProfile",
    "InvariantViolation",
    "KVStore",
    "KeyResult",
    "NetworkError",
    "Op",
    "Operation",
    "Outcome",
    "ReadPath",
    "SafetyChecker",
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
]
