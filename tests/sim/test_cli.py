"""``shardb sim`` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shardb.cli import app

pytest.importorskip("consensus.raft")

runner = CliRunner()


def test_sim_prints_summary_and_exits_zero() -> None:
    result = runner.invoke(app, ["sim", "--seeds", "2", "--steps", "400", "--faults", "all"])
    assert result.exit_code == 0, result.output
    for label in ("seeds run", "faults injected", "ops", "violations", "steps per second"):
        assert label in result.stdout


def test_sim_json_summary() -> None:
    result = runner.invoke(
        app, ["sim", "--seed", "7", "--steps", "400", "--faults", "crash", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["seeds_run"] == 1
    assert summary["violations"] == []
    assert summary["backend"] == "raft" and summary["faults_profile"] == "crash"
    assert set(summary["ops"]) == {"ok", "fail", "unknown"}
    assert list(summary["digests"]) == ["7"]


def test_sim_rejects_unknown_backend() -> None:
    result = runner.invoke(app, ["sim", "--backend", "zab"])
    assert result.exit_code == 2


def test_sim_exits_one_and_prints_replay_on_violation() -> None:
    """With no time allowed for recovery the probe write cannot commit: a liveness
    violation, reported with the exact command that replays it."""
    args = ["sim", "--seed", "5", "--steps", "300", "--faults", "none", "--liveness-timeouts", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "FAILED seed 5" in result.stdout
    assert "[liveness]" in result.stdout
    replay = "shardb sim --backend raft --seed 5 --faults none --steps 300 --nodes 3"
    assert f"replay: {replay} --liveness-timeouts 0" in result.stdout


def test_sim_with_groups_reports_quiescence() -> None:
    """``--groups`` runs every node as a MultiGroupHost and reports the quiet check."""
    args = ["sim", "--groups", "4", "--backend", "mixed", "--seed", "1", "--steps", "2000"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["groups"] == 4 and summary["backend"] == "mixed"
    assert summary["violations"] == []
    assert summary["quiesce"]["quiet_window_other"] == 0
    assert summary["quiesce"]["quiesce_us_max"] is not None


def test_sim_mixed_backend_needs_groups() -> None:
    result = runner.invoke(app, ["sim", "--backend", "mixed"])
    assert result.exit_code == 2
