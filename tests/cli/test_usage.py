"""Argument and configuration errors, checked in-process with typer's CliRunner (no cluster):
each is a usage error, exit status 2, with the reason on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardb.cli import app
from shardb.surface.cli import DEFAULT_HEAL_AFTER_S
from shardb.surface.session import DEFAULT_HEAL_AFTER_MS


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in ("SHARDB_ADDR", "SHARDB_CONFIG", "SHARDB_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "--bogus"],
        ["demo", "--backend", "zab"],
        ["demo", "--nodes", "0"],
        ["sql", "--format", "xml", "-e", "SELECT 1"],
        ["cluster", "split", "t"],
        ["cluster", "transfer-leader", "two", "1"],
        ["cluster", "frobnicate"],
    ],
)
def test_malformed_arguments_exit_2(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_remove_node_needs_the_node_to_remove(runner: CliRunner) -> None:
    result = runner.invoke(app, ["cluster", "remove-node"])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_add_node_without_a_local_cluster_explains_join(runner: CliRunner) -> None:
    """Only a local cluster's nodes are started by the CLI; elsewhere it says how to join.
    (No cluster at the address either: the command fails before it could start anything.)"""
    result = runner.invoke(app, ["cluster", "add-node", "--addr", "127.0.0.1:1"])
    assert result.exit_code in (2, 3), result.output
    assert result.stdout == ""


def test_execute_and_file_together_are_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sql", "-e", "SELECT 1", "-f", "x.sql", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_no_cluster_anywhere_is_a_usage_error_naming_the_sources(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sql", "-e", "SELECT 1"])
    assert result.exit_code == 2
    assert "SHARDB_ADDR" in result.stderr and "shardb up" in result.stderr


def test_a_malformed_config_file_is_a_usage_error(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[client]\nconsistency = 'sometimes'\n")
    monkeypatch.setenv("SHARDB_CONFIG", str(config))
    result = runner.invoke(app, ["sql", "-e", "SELECT 1"])
    assert result.exit_code == 2
    assert str(config) in result.stderr and "consistency" in result.stderr


def test_down_without_a_cluster_fails_clearly(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no cluster in" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["demo", "--help"],
        ["up", "--help"],
        ["down", "--help"],
        ["sql", "--help"],
        ["cluster", "--help"],
        ["cluster", "status", "--help"],
        ["cluster", "transfer-leader", "--help"],
    ],
)
def test_every_command_has_help(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert "Usage:" in result.stdout


def test_shell_completion_script_is_available(runner: CliRunner) -> None:
    """typer's completion is on: ``--show-completion SHELL`` prints the script that
    ``--install-completion`` installs."""
    result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0
    assert "complete" in result.stdout


def test_the_cli_default_auto_heal_matches_the_sessions() -> None:
    assert DEFAULT_HEAL_AFTER_S * 1000 == DEFAULT_HEAL_AFTER_MS
