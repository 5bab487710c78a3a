"""CPU time from /proc and node counter deltas across kills and restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardb.bench.procstat import (
    COUNTERS,
    ProcessLedger,
    counter_delta,
    parse_proc_stat,
    per_committed_entry,
    process_cpu_seconds,
)
from shardb.bench.runner import node_counters


def _stat_line(comm: str, utime: int, stime: int) -> str:
    # Fields 3..13 before utime (14) and stime (15), as in proc(5).
    before = "S 1 2 3 4 5 6 7 8 9 10"
    return f"4242 ({comm}) {before} {utime} {stime} 0 0 20 0 4 0 100 0 0"


def test_parse_proc_stat_counts_fields_after_the_last_parenthesis() -> None:
    """A command name may hold spaces and ')' (proc(5)): fields count from the last ')'."""
    line = _stat_line("python -m shardb) x", utime=250, stime=50)
    assert parse_proc_stat(line, ticks_per_s=100) == pytest.approx(3.0)


def test_parse_proc_stat_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="not a /proc"):
        parse_proc_stat("garbage", ticks_per_s=100)


def test_process_cpu_seconds_of_this_process_grows_and_a_missing_pid_is_none(
    tmp_path: Path,
) -> None:
    before = process_cpu_seconds(os.getpid())
    assert before is not None
    total = 0
    while (process_cpu_seconds(os.getpid()) or 0.0) <= before:  # burn CPU until a tick shows
        total += sum(range(10_000))
    assert total >= 0
    assert process_cpu_seconds(4242, proc=tmp_path) is None


def test_counter_delta_subtracts_every_counter() -> None:
    before = dict.fromkeys(COUNTERS, 5)
    after = {**before, "messages_sent": 25, "fsyncs": 7}
    delta = counter_delta(before, after)
    assert delta["messages_sent"] == 20
    assert delta["fsyncs"] == 2
    assert delta["proposals"] == 0


def test_ledger_sums_incarnations_across_a_restart() -> None:
    """A killed process's counters are lost and its successor starts from zero: the delta is
    the old process's growth up to its last sample plus everything the new one did."""
    ledger = ProcessLedger()
    ledger.observe(1, 100, counters={"messages_sent": 50}, cpu_s=2.0)  # baseline
    ledger.observe(1, 100, counters={"messages_sent": 80}, cpu_s=3.5)  # last sample, then kill
    ledger.observe(1, 200, counters={"messages_sent": 30}, cpu_s=0.5, fresh=True)
    ledger.observe(1, 200, counters={"messages_sent": 45}, cpu_s=0.75)
    ledger.observe(2, 300, counters={"messages_sent": 10}, cpu_s=1.0)
    ledger.observe(2, 300, counters=None, cpu_s=None)  # paused: no answer, keeps the last
    assert ledger.node_counters()[1]["messages_sent"] == 30 + 45
    assert ledger.node_counters()[2]["messages_sent"] == 0
    assert ledger.node_cpu_seconds() == {1: pytest.approx(1.5 + 0.75), 2: 0.0}
    assert ledger.incarnations() == {1: 2, 2: 1}


def test_per_committed_entry_divides_cluster_totals() -> None:
    counters = {
        n: {**dict.fromkeys(COUNTERS, 0), "messages_sent": 40, "frames_sent": 20, "fsyncs": 10,
            "bytes_sent": 3000}
        for n in (1, 2, 3)
    }  # fmt: skip
    assert per_committed_entry(counters, 30) == {
        "messages": 4.0,
        "frames": 2.0,
        "bytes": 300.0,
        "fsyncs": 1.0,
    }
    assert per_committed_entry(counters, 0)["messages"] is None
    assert per_committed_entry(counters, 0)["bytes"] is None


def test_sampled_counters_carry_the_transport_bytes_sent() -> None:
    """The ``stats`` reply keeps transport counters apart from the node's; the sampler puts
    ``bytes_sent`` beside the node's counters so the ledger takes its delta like any other."""
    reply = {"node": {"messages_sent": 7}, "transport": {"bytes_sent": 1234, "frames_sent": 3}}
    counters = node_counters(reply)
    assert counters == {"messages_sent": 7, "bytes_sent": 1234}
    ledger = ProcessLedger()
    ledger.observe(1, 100, counters=counters, cpu_s=None)
    ledger.observe(1, 100, counters=node_counters({**reply, "transport": {"bytes_sent": 5234}}),
                   cpu_s=None)  # fmt: skip
    assert ledger.node_counters()[1]["bytes_sent"] == 4000
    assert node_counters(None) is None
    assert node_counters({"node": {"messages_sent": 1}}) == {"messages_sent": 1, "bytes_sent": 0}
