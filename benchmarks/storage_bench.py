"""Micro-benchmark of the durable log store: group commit of many groups per transaction.

Question: how many batches (transactions) and entries per second does one node's
``SQLiteLogStore`` persist, and how many fsyncs does that cost, as the number of groups
merged into one transaction grows?

Each transaction carries, for each of G groups, N entries of B bytes plus a hard state, as a
host's merged Ready would. Every K transactions each group compacts through a snapshot, so the
files stay bounded as in production. Latency is per ``write_batch`` call (commit + fsync).

    .venv/bin/python benchmarks/storage_bench.py --groups 1 8 64 --entries 4 --seconds 3

Results go to stdout (a table, or JSON with --json); the file lives in a temporary directory
unless --dir is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog
from hdrh.histogram import HdrHistogram

from consensus.api import Ready
from consensus.storage import SQLiteLogStore
from consensus.types import (
    ConfState,
    Entry,
    GroupId,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    groups: int
    entries_per_group: int
    entry_bytes: int
    transactions: int
    seconds: float
    transactions_per_s: float
    entries_per_s: float
    mb_per_s: float
    fsyncs: int
    fsyncs_per_transaction: float
    latency_us_p50: int
    latency_us_p99: int
    latency_us_max: int
    file_bytes_end: int


def run_one(
    directory: Path,
    *,
    groups: int,
    entries_per_group: int,
    entry_bytes: int,
    seconds: float,
    max_transactions: int,
    compact_every: int,
) -> Result:
    path = directory / f"bench-g{groups}-n{entries_per_group}-b{entry_bytes}.db"
    for suffix in ("", "-wal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    ids = [GroupId(g) for g in range(1, groups + 1)]
    payload = bytes(entry_bytes)
    histogram = HdrHistogram(1, 60_000_000, 3)
    with SQLiteLogStore(path, cluster_id="bench", node_id=NodeId(1), create=True) as store:
        for g in ids:
            store.create_group(g, "raft", ConfState(voters=(NodeId(1),)))
        start_stats = store.statistics()
        next_index = 1
        transactions = 0
        started = time.perf_counter()
        deadline = started + seconds
        while transactions < max_transactions and time.perf_counter() < deadline:
            first = next_index
            next_index += entries_per_group
            entries = tuple(
                Entry(index=Index(i), term=Term(1), data=payload) for i in range(first, next_index)
            )
            compact = None
            if compact_every and (transactions + 1) % compact_every == 0:
                meta = SnapshotMeta(index=Index(next_index - 1), term=Term(1), conf=ConfState())
                compact = Snapshot(meta=meta, data=b"snapshot")
            hard = HardState(term=Term(1), vote=NodeId(1), commit=Index(next_index - 1))
            ready = Ready(entries=entries, snapshot=compact, hard_state=hard, must_sync=True)
            batch = [(g, ready) for g in ids]
            t0 = time.perf_counter_ns()
            store.write_batch(batch)
            histogram.record_value(max(1, (time.perf_counter_ns() - t0) // 1000))
            transactions += 1
        elapsed = time.perf_counter() - started
        stats = store.statistics()
        file_bytes = store.file_size_bytes()
    entries_total = stats.entries_written - start_stats.entries_written
    fsyncs = stats.fsyncs - start_stats.fsyncs
    return Result(
        groups=groups,
        entries_per_group=entries_per_group,
        entry_bytes=entry_bytes,
        transactions=transactions,
        seconds=round(elapsed, 3),
        transactions_per_s=round(transactions / elapsed, 1),
        entries_per_s=round(entries_total / elapsed, 1),
        mb_per_s=round((stats.bytes_written - start_stats.bytes_written) / elapsed / 1e6, 2),
        fsyncs=fsyncs,
        fsyncs_per_transaction=round(fsyncs / max(1, transactions), 3),
        latency_us_p50=histogram.get_value_at_percentile(50),
        latency_us_p99=histogram.get_value_at_percentile(99),
        latency_us_max=histogram.get_max_value(),
        file_bytes_end=file_bytes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--entries", type=int, nargs="+", default=[4], help="per group per txn")
    parser.add_argument("--entry-bytes", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0, help="per configuration")
    parser.add_argument("--max-transactions", type=int, default=1_000_000)
    parser.add_argument("--compact-every", type=int, default=100, help="0 disables")
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    # The store logs open/close at info; keep stdout for the results.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [
            run_one(
                Path(tmp),
                groups=g,
                entries_per_group=n,
                entry_bytes=args.entry_bytes,
                seconds=args.seconds,
                max_transactions=args.max_transactions,
                compact_every=args.compact_every,
            )
            for g in args.groups
            for n in args.entries
        ]
    if args.json:
        machine = {"python": platform.python_version(), "machine": platform.platform()}
        print(json.dumps({"machine": machine, "results": [asdict(r) for r in results]}))
        return 0
    header = (
        f"{'groups':>6} {'n/grp':>5} {'txn/s':>9} {'entries/s':>11} {'MB/s':>7} "
        f"{'fsync/txn':>9} {'p50 us':>8} {'p99 us':>8} {'file MB':>8}"
    )
    print(header)
    for r in results:
        print(
            f"{r.groups:>6} {r.entries_per_group:>5} {r.transactions_per_s:>9.1f} "
            f"{r.entries_per_s:>11.1f} {r.mb_per_s:>7.2f} {r.fsyncs_per_transaction:>9.3f} "
            f"{r.latency_us_p50:>8} {r.latency_us_p99:>8} {r.file_bytes_end / 1e6:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
