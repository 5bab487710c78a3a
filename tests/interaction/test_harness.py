"""The interaction harness itself: the file format round-trips, a wrong expectation is
reported as a diff, ``rewrite`` restores it, and the driver's checks and errors work."""

from __future__ import annotations

from pathlib import Path

import pytest

from .runner import CommandError, InteractionEnv, check_file, run_script
from .script import ScriptError, parse, render

TESTDATA = Path(__file__).parent / "testdata"

SCRIPT = """\
# a comment that must survive a rewrite
add-nodes 3
----
INFO 1 became_follower term=0 leader=0
INFO 2 became_follower term=0 leader=0
INFO 3 became_follower term=0 leader=0

campaign 1
----
INFO 1 became_pre_candidate term=0 leader=0
INFO 1 election_started term=1 pre_vote=true transfer=false

# trailing comment
"""


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*/*.txt")), ids=lambda p: p.name)
def test_files_round_trip(path: Path) -> None:
    """Rendering a parsed file with its own expectations reproduces it byte for byte, so a
    rewrite only ever changes outputs."""
    text = path.read_text()
    script = parse(text)
    assert render(script, [b.expected for b in script.blocks]) == text


def test_parse_rejects_a_command_without_separator() -> None:
    with pytest.raises(ScriptError, match="line 1"):
        parse("campaign 1\nstabilize\n")


def test_xfail_header_is_read_before_the_first_command() -> None:
    assert parse("# xfail: core bug\nheal\n----\nok\n").xfail_reason() == "core bug"
    assert parse("heal\n----\nok\n# xfail: too late\n").xfail_reason() is None


def test_mismatch_is_reported_and_rewrite_restores_it(tmp_path: Path) -> None:
    """A changed expected line yields a unified diff naming it; ``rewrite`` puts the real
    output back and keeps comments; afterwards the file matches."""
    path = tmp_path / "raft" / "demo.txt"
    path.parent.mkdir()
    path.write_text(SCRIPT)
    assert check_file(path) is None
    path.write_text(SCRIPT.replace("election_started term=1", "election_started term=7"))
    diff = check_file(path)
    assert diff is not None
    assert "-INFO 1 election_started term=7" in diff
    assert "+INFO 1 election_started term=1" in diff
    assert check_file(path, rewrite=True) is None
    assert path.read_text() == SCRIPT
    assert check_file(path) is None


def test_same_seed_replays_identically_and_seeds_matter() -> None:
    """Every core's rng comes from the script's seed: a run replays bit for bit, and a
    different seed changes the randomized election timeout (Raft §5.2)."""
    text = "add-nodes 3 seed={}\n----\n\ntick-election 1\n----\n\nstatus 1\n----\n"

    def run(seed: int) -> list[list[str]]:
        return run_script("raft", parse(text.format(seed)))

    assert run(1) == run(1)
    ticks_to_campaign = set()
    for seed in range(8):
        env = InteractionEnv("raft")
        env.run(f"add-nodes 3 seed={seed}")
        for tick in range(1, 21):
            if env.run("tick 1") != ["ok"]:
                ticks_to_campaign.add(tick)
                break
    assert len(ticks_to_campaign) > 1


def test_api_errors_print_and_script_errors_raise() -> None:
    env = InteractionEnv("raft")
    env.run("add-nodes 3")
    assert env.run("propose 1 x") == ["error: NotLeader: not the leader; leader unknown"]
    with pytest.raises(CommandError, match="unknown command"):
        env.run("frobnicate 1")
    with pytest.raises(CommandError, match="no node 9"):
        env.run("campaign 9")
