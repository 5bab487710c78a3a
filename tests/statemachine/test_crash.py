"""Crash safety: rows and the applied index commit together.

A real subprocess applies batches and prints every acknowledged applied index; the test kills
it with SIGKILL at random moments, reopens the file and checks that the rows are exactly those
of entries 1..applied: nothing applied twice, nothing skipped, nothing acknowledged lost.

Reference: ARCHITECTURE.md "State machine" (applied index in the same transaction).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from consensus.types import GroupId

from .helpers import FIRST, descriptor, open_sm, rows

TOTAL = 3000
SEED = FIRST - 1
ROOT = Path(__file__).resolve().parents[2]


def _expected(applied: int) -> list[list[object]]:
    counter = [0, "c", float(sum(1 for i in range(3, applied + 1) if i % 2)), None]
    return [counter] + [[i, "v", None, None] for i in range(2, applied + 1, 2)]


def _check(path: Path, acked: int) -> int:
    sm = open_sm(path, descriptor(1, None, None))
    try:
        applied = int(sm.applied_index(GroupId(1)))
        assert applied >= acked, f"acknowledged {acked}, recovered only {applied}"
        if applied > SEED:
            assert rows(sm, 1) == _expected(applied - SEED)
        return applied
    finally:
        sm.close()


def test_kill_9_never_double_applies_or_skips(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    applied = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.statemachine.crash_worker",
                str(path),
                str(TOTAL),
                str(rng.randrange(1, 12)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        acked = applied
        for _ in range(rng.randrange(3, 60)):
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("applied "):  # other lines are the worker's logs
                acked = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        applied = _check(path, acked)
    assert applied > SEED
