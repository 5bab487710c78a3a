"""Dot-command and psql-alias parsing: values for good lines, usage errors for bad ones."""

from __future__ import annotations

import pytest

from consensus.types import GroupId, NodeId
from shardb.shell import (
    CommandError,
    Crash,
    Heal,
    Isolate,
    OutputMode,
    Partition,
    Restart,
    Skew,
    Slow,
    help_text,
    is_command,
    parse_command,
)
from shardb.shell.commands import (
    COMMAND_WORDS,
    SPECS,
    Backend,
    Consistency,
    Expanded,
    Fault,
    Groups,
    Headers,
    Help,
    Indexes,
    Leader,
    Mode,
    Nodes,
    Output,
    Quit,
    Ranges,
    Read,
    Schema,
    Split,
    Tables,
    Timer,
    Trace,
    Transfer,
)


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (".help", Help()),
        (".quit", Quit()),
        (".exit", Quit()),
        (".tables", Tables()),
        (".schema", Schema(table=None)),
        (".schema users", Schema(table="users")),
        (".indexes", Indexes(table=None)),
        (".indexes users", Indexes(table="users")),
        (".mode", Mode(mode=None)),
        (".mode CSV", Mode(mode=OutputMode.CSV)),
        (".mode vertical", Mode(mode=OutputMode.VERTICAL)),
        (".headers off", Headers(on=False)),
        (".headers", Headers(on=None)),
        (".timer on", Timer(on=True)),
        (".trace on", Trace(on=True)),
        (".trace OFF", Trace(on=False)),
        (".read setup.sql", Read(path="setup.sql")),
        (".read 'my file.sql'", Read(path="my file.sql")),
        (".output out.csv", Output(path="out.csv")),
        (".output", Output(path=None)),
        (".nodes", Nodes()),
        (".groups", Groups()),
        (".ranges", Ranges(table=None)),
        (".ranges users", Ranges(table="users")),
        (".leader users 42", Leader(table="users", key=42)),
        (".leader users '42'", Leader(table="users", key="42")),
        (".leader users bob", Leader(table="users", key="bob")),
        (".leader users 'it''s'", Leader(table="users", key="it's")),
        (".consistency", Consistency(level=None)),
        (".consistency lease", Consistency(level="lease")),
        (".backend", Backend()),
        (".split users AT 100", Split(table="users", keys=(100,))),
        (".split users at 100 'm' -5", Split(table="users", keys=(100, "m", -5))),
        (".transfer 3 n2", Transfer(group=GroupId(3), node=NodeId(2))),
        (".transfer 3 2", Transfer(group=GroupId(3), node=NodeId(2))),
    ],
)
def test_dot_commands_parse_to_values(line: str, command: object) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("\\q", Quit()),
        ("\\?", Help()),
        ("\\d", Tables()),
        ("\\dt", Tables()),
        ("\\d users", Schema(table="users")),
        ("\\di", Indexes(table=None)),
        ("\\x", Expanded(setting=None)),
        ("\\x auto", Expanded(setting="auto")),
        ("\\x on", Expanded(setting="on")),
        ("\\timing", Timer(on=None)),
        ("\\timing off", Timer(on=False)),
        ("\\i setup.sql", Read(path="setup.sql")),
        ("\\o", Output(path=None)),
        ("\\o result.txt", Output(path="result.txt")),
        ("\\t on", Headers(on=False)),
        ("\\t", Headers(on=None)),
    ],
)
def test_psql_backslash_aliases_parse_like_their_dot_commands(line: str, command: object) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        (
            ".partition n1 | n2 n3",
            Partition(sides=((NodeId(1),), (NodeId(2), NodeId(3)))),
        ),
        (
            ".partition n1|n2 | 3",
            Partition(sides=((NodeId(1),), (NodeId(2),), (NodeId(3),))),
        ),
        (".isolate n2", Isolate(node=NodeId(2))),
        (".heal", Heal()),
        (".crash n3", Crash(node=NodeId(3))),
        (".restart N3", Restart(node=NodeId(3))),
        (".slow n2 50ms", Slow(node=NodeId(2), delay_ms=50)),
        (".slow n2 2s", Slow(node=NodeId(2), delay_ms=2000)),
        (".slow n2 0", Slow(node=NodeId(2), delay_ms=0)),
        (".skew n1 +300ms", Skew(node=NodeId(1), offset_ms=300)),
        (".skew n1 -1s", Skew(node=NodeId(1), offset_ms=-1000)),
    ],
)
def test_fault_commands_parse_into_fault_values(line: str, fault: object) -> None:
    assert parse_command(line) == Fault(command=fault)  # type: ignore[arg-type]  # parametrized


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (".nope", "unknown command .nope; try .help"),
        ("\\zz", "unknown command \\zz; try .help"),
        (".tables users", "usage: .tables"),
        (".mode fancy", "unknown mode 'fancy'; usage: .mode [table|vertical|csv|tsv|jsonl|json]"),
        (".headers maybe", "expected on or off; usage: .headers [on|off]"),
        (".read", "usage: .read FILE"),
        (".leader users", "usage: .leader TABLE KEY"),
        (".consistency eventual", "unknown consistency level 'eventual'"),
        (".split users 100", "usage: .split TABLE AT KEY [KEY ...]"),
        (".split users AT", "usage: .split TABLE AT KEY [KEY ...]"),
        (".transfer g1 n2", "'g1' is not a group id"),
        (".transfer 1 node2", "'node2' is not a node (write n3 or 3)"),
        (".partition n1 n2", "a partition needs at least two sides"),
        (".partition n1 | ", "each side of a partition needs a node"),
        (".partition n1 | n1 n2", "a node may be on one side only"),
        (".isolate", "usage: .isolate NODE"),
        (".slow n2 fast", "'fast' is not a duration like 50ms or 2s"),
        (".slow n2 -5ms", "'-5ms' is not a duration like 50ms or 2s"),
        (".slow n2 61s", "a delay above 60000 ms is refused"),
        (".skew n1 +2h", "'+2h' is not a duration like 50ms or 2s"),
        (".read 'unterminated", "unterminated quote"),
        ("\\x sideways", "expected on, off or auto; usage: \\x [on|off|auto]"),
    ],
)
def test_malformed_commands_raise_usage_errors(line: str, message: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse_command(line)
    assert raised.value.message.startswith(message)


def test_is_command_tells_commands_from_sql() -> None:
    assert is_command(".tables")
    assert is_command("  \\d users")
    assert not is_command("SELECT .5;")
    assert not is_command("")


def test_help_lists_every_command_and_alias() -> None:
    text = help_text()
    for spec in SPECS:
        assert spec.usage in text
        for alias in spec.aliases:
            assert alias in text
    assert "\\x [on|off|auto]" in text


def test_every_command_word_parses_or_asks_for_arguments() -> None:
    """Completion offers only words the parser knows."""
    for word in COMMAND_WORDS:
        try:
            parse_command(word)
        except CommandError as error:
            assert "unknown command" not in error.message
