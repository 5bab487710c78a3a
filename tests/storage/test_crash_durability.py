"""kill -9 durability: every batch acknowledged before a crash is there after a restart.

A real OS process writes batches through ``SQLiteLogStore`` and prints a batch number only
after ``write_batch`` returned. The test SIGKILLs it at a moment chosen by a seeded RNG (after
a random number of acknowledgements, while the child keeps writing), reopens the store and
checks that every acknowledged batch is present and that batches are all-or-nothing. The same
file goes through several crash/restart rounds, so recovery of a crashed WAL is exercised too.

What this proves: ``write_batch`` returns only after the transaction committed (nothing is
buffered in the process). Surviving power loss additionally needs the fsync that
``synchronous=FULL`` issues per commit, which ``test_many_groups_in_one_batch_are_one_
transaction_and_one_fsync`` counts; a process kill cannot exercise it.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

from consensus.storage import SQLiteLogStore
from consensus.types import GroupId

from .helpers import CLUSTER, NODE

GROUPS = (1, 2, 3)
COMPACT_EVERY = 7

# The writer: resume after the last batch found on disk, then write forever, one batch per
# loop holding all groups (group commit), and acknowledge each batch after it returned.
CHILD = """
import sys
from consensus.api import Ready
from consensus.storage import SQLiteLogStore
from consensus.types import *

path, cluster = sys.argv[1], sys.argv[2]
groups = [GroupId(g) for g in (1, 2, 3)]
store = SQLiteLogStore(path, cluster_id=cluster, node_id=NodeId(1), create=True)
known = {info.group_id for info in store.list_groups()}
for g in groups:
    if g not in known:
        store.create_group(g, "raft", ConfState(voters=(NodeId(1),)))
last = store.load(groups[0]).hard_state.commit
print("resumed", last, flush=True)
n = last
while True:
    n += 1
    batch = []
    for g in groups:
        compact = None
        if n % 7 == 0:
            compact = Snapshot(
                meta=SnapshotMeta(index=Index(n - 3), term=Term(1), conf=ConfState()),
                data=b"image-%d" % (n - 3),
            )
        ready = Ready(
            entries=(Entry(index=Index(n), term=Term(1), data=b"g%d-b%d-" % (g, n) * 40),),
            snapshot=compact,
            hard_state=HardState(term=Term(1), vote=NodeId(1), commit=Index(n)),
            must_sync=True,
        )
        batch.append((g, ready))
    store.write_batch(batch)
    print("ack", n, flush=True)
"""


def _run_until_killed(db_path: Path, acks_before_kill: int) -> tuple[int, int]:
    """Start the writer, SIGKILL it after ``acks_before_kill`` acks; return (resumed, last ack)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), CLUSTER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    resumed = last_ack = -1
    seen = 0
    try:
        for line in child.stdout:
            words = line.split()
            if words[:1] == ["resumed"]:
                resumed = int(words[1])
            elif words[:1] == ["ack"]:
                last_ack = int(words[1])
                seen += 1
                if seen == acks_before_kill:
                    child.send_signal(signal.SIGKILL)
                    break
    finally:
        if child.poll() is None:
            child.kill()
        # Acks printed between our last read and the kill are acknowledgements too.
        rest, errors = child.communicate(timeout=60)
    for line in rest.splitlines():
        words = line.split()
        if words[:1] == ["ack"]:
            last_ack = int(words[1])
    assert seen == acks_before_kill, f"writer died early: {errors}"
    assert child.returncode == -signal.SIGKILL
    return resumed, last_ack


def _check_store(db_path: Path, last_ack: int) -> int:
    """Every acknowledged batch is present, atomically, in every group; returns the last
    batch on disk (the ack of the batch in flight at the kill may be missing)."""
    with SQLiteLogStore(db_path, cluster_id=CLUSTER, node_id=NODE) as store:
        states = store.load_all()
    assert sorted(states) == [GroupId(g) for g in GROUPS]
    commits = {int(s.hard_state.commit) for s in states.values()}
    assert len(commits) == 1, f"a batch was applied to some groups only: {commits}"
    (on_disk,) = commits
    assert last_ack <= on_disk <= last_ack + 1
    for g, state in states.items():
        first = state.snapshot.meta.index + 1 if state.snapshot else 1
        assert [e.index for e in state.entries] == list(range(first, on_disk + 1))
        for e in state.entries:
            assert e.data == b"g%d-b%d-" % (g, e.index) * 40
        if on_disk >= COMPACT_EVERY:
            assert state.snapshot is not None
            expected_snapshot = (on_disk // COMPACT_EVERY) * COMPACT_EVERY - 3
            assert state.snapshot.meta.index == expected_snapshot
            assert state.snapshot.data == b"image-%d" % expected_snapshot
    return on_disk


def test_acknowledged_batches_survive_sigkill_across_restarts(tmp_path: Path) -> None:
    """Raft Figure 2: a server responds only after updating stable storage, so whatever it
    acknowledged must be there when it comes back after a crash."""
    rng = random.Random(20240611)
    db_path = tmp_path / "log.db"
    on_disk = 0
    for _round in range(5):
        resumed, last_ack = _run_until_killed(db_path, acks_before_kill=rng.randint(1, 60))
        assert resumed == on_disk, "the restarted writer must resume from what was on disk"
        on_disk = _check_store(db_path, last_ack)


def test_a_torn_wal_tail_after_a_crash_is_discarded(tmp_path: Path) -> None:
    """A crash mid-append leaves a partial WAL frame; SQLite's frame checksums drop it and
    every committed batch before it is still read back."""
    db_path = tmp_path / "log.db"
    _, last_ack = _run_until_killed(db_path, acks_before_kill=20)
    wal = Path(f"{db_path}-wal")
    assert wal.exists() and wal.stat().st_size > 0, "the killed writer should leave a WAL"
    with wal.open("ab") as f:
        f.write(random.Random(7).randbytes(3000))
    _check_store(db_path, last_ack)
