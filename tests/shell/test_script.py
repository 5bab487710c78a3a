"""The script runner (``-e``, ``-f``, piped stdin) and the dot-commands it shares with the REPL.

Every test runs a script against ``RecordingSession`` and asserts what the shell sent, what it
printed on stdout and stderr, and the exit code.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consensus.types import NodeId
from shardb.shell import (
    ExitCode,
    FormatOptions,
    Isolate,
    OutputMode,
    Partition,
    input_complete,
    run_script,
    statement_complete,
)
from shell.doubles import DDL, FakeResult, RecordingSession, ScriptedError, select, write

META: dict[str, Any] = {
    "nodes": [
        {"node_id": 2, "address": "127.0.0.1:7002", "alive": False},
        {"node_id": 1, "address": "127.0.0.1:7001", "alive": True},
    ],
    "ranges": [
        {
            "range_id": 1,
            "table": "users",
            "start_key": None,
            "end_key": 100,
            "group_id": 5,
            "replicas": [1, 2, 3],
            "backend": "raft",
            "epoch": 2,
            "leader": 1,
        },
        {
            "range_id": 2,
            "table": "users",
            "start_key": 100,
            "end_key": None,
            "group_id": 6,
            "replicas": [1, 2, 3],
            "backend": "raft",
            "epoch": 2,
            "leader": 2,
        },
        {
            "range_id": 3,
            "table": "logs",
            "start_key": None,
            "end_key": None,
            "group_id": 5,
            "replicas": [1, 2, 3],
            "backend": "raft",
            "epoch": 1,
            "leader": 1,
        },
    ],
    "tables": [
        {
            "name": "users",
            "schema_sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)",
            "pk_column": "id",
            "backend": "raft",
        },
        {
            "name": "logs",
            "schema_sql": "CREATE TABLE logs (id INTEGER PRIMARY KEY, line TEXT) "
            "WITH (backend = paxos);",
            "pk_column": "id",
            "backend": "paxos",
        },
    ],
}


class Run:
    """One script run's outputs."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err


async def run(
    session: RecordingSession,
    text: str,
    *,
    mode: OutputMode = OutputMode.TABLE,
    clock: Any = None,
) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = await run_script(
        session, text, out, err, options=FormatOptions(mode=mode), source="t.sql", clock=clock
    )
    return Run(code, out.getvalue(), err.getvalue())


# --- statement boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("SELECT 1;", True),
        ("SELECT 1", False),
        ("SELECT ';'", False),
        ("SELECT ';", False),
        ("SELECT 1 -- done;", False),
        ("SELECT 1 /* ; ", False),
        ('SELECT "a;b', False),
        ("SELECT 1; SELECT 2", False),
        ("SELECT 1; SELECT 2;", True),
        ("SELECT 1; -- trailing comment", True),
        ("SHOW RANGES FROM TABLE t;", True),
        ("SHOW RANGES FROM TABLE t", False),
        ("INSERT INTO t VALUES ('a;b');", True),
    ],
)
def test_statement_complete_ignores_semicolons_in_strings_and_comments(
    text: str, complete: bool
) -> None:
    assert statement_complete(text) is complete


def test_input_complete_accepts_commands_and_blank_input_at_once() -> None:
    assert input_complete(".tables")
    assert input_complete("   ")
    assert not input_complete("SELECT\n1")


# --- statements and exit codes ----------------------------------------------------------------


async def test_each_statement_is_sent_alone_without_its_semicolon() -> None:
    session = RecordingSession()
    result = await run(session, "INSERT INTO t VALUES (1, 'a;b'); SELECT\n  1;\nSELECT 2")
    assert result.code == ExitCode.OK
    assert session.statements == ["INSERT INTO t VALUES (1, 'a;b')", "SELECT\n  1", "SELECT 2"]


async def test_results_go_to_stdout_and_messages_to_stderr() -> None:
    session = RecordingSession(results={"SELECT 1": select(["one"], (1,))})
    result = await run(session, ".mode csv\nSELECT 1;\n.timer on\n", mode=OutputMode.TABLE)
    assert result.out == "one\n1\n"
    assert result.err == "timer on\n"


async def test_a_sql_error_stops_the_script_with_exit_code_1_and_its_line() -> None:
    session = RecordingSession(
        results={"SELECT *\nFROM nope": ScriptedError("unknown_table", "no such table: nope")}
    )
    result = await run(session, "SELECT 1;\n\nSELECT *\nFROM nope;\nSELECT 3;")
    assert result.code == 1
    assert session.statements == ["SELECT 1", "SELECT *\nFROM nope"]
    assert result.err == "t.sql:3: Error (unknown_table): no such table: nope\n"


async def test_the_second_statement_on_a_line_is_reported_on_that_line() -> None:
    session = RecordingSession(results={"SELECT 2": ScriptedError("sql_error", "boom")})
    result = await run(session, "SELECT 1;\nSELECT 0; SELECT 2; SELECT 3;")
    assert result.err == "t.sql:2: Error (sql_error): boom\n"
    assert session.statements == ["SELECT 1", "SELECT 0", "SELECT 2"]


@pytest.mark.parametrize(
    "code", ["unavailable", "timeout", "unknown_outcome", "partial", "overloaded", "unreachable"]
)
async def test_cluster_unavailable_errors_exit_with_3(code: str) -> None:
    session = RecordingSession(default=ScriptedError(code, "no leader for range 4"))
    result = await run(session, "INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);")
    assert result.code == 3
    assert len(session.statements) == 1


async def test_a_refused_connection_exits_with_3() -> None:
    session = RecordingSession(default=ConnectionRefusedError(111, "Connection refused"))
    result = await run(session, "SELECT 1;")
    assert result.code == 3
    assert "cannot reach the cluster" in result.err


async def test_an_exception_that_is_not_a_database_error_is_not_swallowed() -> None:
    """A bug in the client must surface, not turn into a tidy exit code."""
    session = RecordingSession(default=ZeroDivisionError("bug"))
    with pytest.raises(ZeroDivisionError):
        await run(session, "SELECT 1;")


async def test_a_malformed_command_exits_with_2() -> None:
    session = RecordingSession()
    result = await run(session, "SELECT 1;\n.mode fancy\nSELECT 2;")
    assert result.code == 2
    assert session.statements == ["SELECT 1"]
    assert result.err.startswith("t.sql:2: unknown mode 'fancy'")


async def test_an_unterminated_string_at_the_end_is_a_syntax_error() -> None:
    session = RecordingSession()
    result = await run(session, "SELECT 1;\nSELECT 'oops")
    assert result.code == 1
    assert "t.sql:2: Error (syntax_error)" in result.err
    assert session.statements == ["SELECT 1"]


async def test_quit_ends_the_script_successfully() -> None:
    session = RecordingSession()
    result = await run(session, "SELECT 1;\n.quit\nSELECT 2;")
    assert result.code == 0
    assert session.statements == ["SELECT 1"]


async def test_comments_and_blank_lines_send_nothing() -> None:
    session = RecordingSession()
    result = await run(session, "-- setup\n\n/* nothing */\n")
    assert result.code == 0
    assert session.statements == []


async def test_a_dot_inside_a_statement_is_sql_not_a_command() -> None:
    session = RecordingSession()
    await run(session, "SELECT\n.5;")
    assert session.statements == ["SELECT\n.5"]


async def test_timer_prints_elapsed_time_from_the_clock() -> None:
    ticks: Iterator[float] = iter([10.0, 10.0125])
    session = RecordingSession(default=write(2))
    result = await run(session, ".timer on\nDELETE FROM t WHERE id < 3;", clock=lambda: next(ticks))
    assert result.out == "2 rows changed\nTime: 12.500 ms\n"


async def test_timer_in_a_machine_mode_goes_to_stderr() -> None:
    ticks: Iterator[float] = iter([0.0, 0.001])
    session = RecordingSession(default=select(["a"], (1,)))
    result = await run(
        session, ".timer on\nSELECT 1;", mode=OutputMode.CSV, clock=lambda: next(ticks)
    )
    assert result.out == "a\n1\n"
    assert result.err == "timer on\nTime: 1.000 ms\n"


# --- session settings ---------------------------------------------------------------------------


async def test_consistency_applies_to_the_following_statements() -> None:
    session = RecordingSession()
    result = await run(session, "SELECT 1;\n.consistency stale\nSELECT 2;\n.consistency")
    assert [call[3] for call in session.calls if call[0] == "execute"] == ["linearizable", "stale"]
    assert result.out.endswith("stale\n")


async def test_trace_on_asks_for_a_trace_and_prints_it() -> None:
    trace = {
        "route": "point",
        "ranges": [3],
        "groups": [2],
        "leaders": [1],
        "retries": 1,
        "parse_ms": 0.125,
        "route_ms": 0.25,
        "consensus_ms": 1.5,
        "total_ms": 2.0,
    }
    traced = FakeResult(kind="select", columns=("a",), rows=((1,),), trace=trace)
    session = RecordingSession(results={"SELECT 1": traced})
    result = await run(session, ".trace on\nSELECT 1;\n.trace off\nSELECT 2;")
    assert [call[4] for call in session.calls if call[0] == "execute"] == [True, False]
    assert result.err == (
        "trace on\n"
        "trace: route=point ranges=3 groups=2 leaders=1 retries=1\n"
        "trace: parse=0.125 ms route=0.250 ms consensus=1.500 ms total=2.000 ms\n"
        "trace off\n"
    )


async def test_trace_says_so_when_the_gateway_returns_none() -> None:
    session = RecordingSession(default=write(1))
    result = await run(session, ".trace on\nDELETE FROM t;")
    assert "trace: none returned by the gateway" in result.err


async def test_expanded_toggle_switches_between_table_and_vertical() -> None:
    session = RecordingSession(default=select(["a"], (1,)))
    result = await run(session, "\\x\nSELECT 1;\n\\x\nSELECT 2;")
    assert result.out.startswith("-[ RECORD 1 ]----\na | 1\n(1 row)\n┌───┐")


async def test_headers_off_drops_the_csv_header() -> None:
    session = RecordingSession(default=select(["a"], (1,)))
    result = await run(session, ".headers off\nSELECT 1;", mode=OutputMode.CSV)
    assert result.out == "1\n"


# --- files ----------------------------------------------------------------------------------


async def test_read_runs_a_file_in_place(tmp_path: Path) -> None:
    inner = tmp_path / "inner.sql"
    inner.write_text("SELECT 2;\n.mode csv\n")
    session = RecordingSession(default=select(["a"], (1,)))
    result = await run(session, f"SELECT 1;\n.read '{inner}'\nSELECT 3;")
    assert result.code == 0
    assert session.statements == ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert result.out.endswith("a\n1\n")


async def test_an_error_inside_a_read_file_names_that_file_and_stops_the_script(
    tmp_path: Path,
) -> None:
    inner = tmp_path / "inner.sql"
    inner.write_text("SELECT 1;\nSELECT bad;\n")
    session = RecordingSession(results={"SELECT bad": ScriptedError("sql_error", "no column")})
    result = await run(session, f".read {inner}\nSELECT 3;")
    assert result.code == 1
    assert result.err == f"{inner}:2: Error (sql_error): no column\n"
    assert "SELECT 3" not in session.statements


async def test_read_of_a_missing_file_exits_with_2(tmp_path: Path) -> None:
    result = await run(RecordingSession(), f".read {tmp_path / 'missing.sql'}")
    assert result.code == 2
    assert "cannot read" in result.err


async def test_a_file_that_reads_itself_stops_at_the_depth_limit(tmp_path: Path) -> None:
    loop = tmp_path / "loop.sql"
    loop.write_text(f"SELECT 1;\n.read {loop}\n")
    session = RecordingSession()
    result = await run(session, f".read {loop}")
    assert result.code == 2
    assert "nested deeper than 16 files" in result.err
    assert len(session.statements) == 16


async def test_output_sends_results_to_a_file_then_back(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    session = RecordingSession(default=select(["a"], (1,)))
    result = await run(
        session, f".output {target}\nSELECT 1;\n.output\nSELECT 2;", mode=OutputMode.CSV
    )
    assert target.read_text() == "a\n1\n"
    assert result.out == "a\n1\n"


async def test_output_to_an_unwritable_path_exits_with_2(tmp_path: Path) -> None:
    result = await run(RecordingSession(), f".output {tmp_path / 'no' / 'such' / 'dir.txt'}")
    assert result.code == 2
    assert "cannot write" in result.err


# --- cluster views ----------------------------------------------------------------------------


async def test_tables_lists_names_keys_and_backends() -> None:
    result = await run(RecordingSession(meta_view=META), ".tables", mode=OutputMode.CSV)
    assert result.out == "table,primary_key,backend\nlogs,id,paxos\nusers,id,raft\n"


async def test_schema_prints_create_statements() -> None:
    session = RecordingSession(meta_view=META)
    result = await run(session, ".schema\n.schema users")
    assert result.out == (
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, line TEXT) WITH (backend = paxos);\n"
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);\n"
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);\n"
    )


async def test_schema_of_an_unknown_table_is_an_sql_error() -> None:
    result = await run(RecordingSession(meta_view=META), ".schema nope")
    assert result.code == 1
    assert result.err == "t.sql:1: Error (unknown_table): no such table: nope\n"


async def test_nodes_lists_nodes_in_id_order() -> None:
    result = await run(RecordingSession(meta_view=META), ".nodes", mode=OutputMode.CSV)
    assert result.out == "node_id,address,alive\n1,127.0.0.1:7001,yes\n2,127.0.0.1:7002,no\n"


async def test_groups_gathers_ranges_by_group() -> None:
    result = await run(RecordingSession(meta_view=META), ".groups", mode=OutputMode.CSV)
    assert result.out == (
        'group_id,backend,leader,replicas,ranges\n5,raft,1,"1,2,3","1,3"\n6,raft,2,"1,2,3",2\n'
    )


async def test_ranges_of_one_table() -> None:
    result = await run(RecordingSession(meta_view=META), ".ranges users", mode=OutputMode.CSV)
    assert result.out == (
        "range_id,table,start_key,end_key,group_id,replicas,backend,epoch,leader\n"
        '1,users,,100,5,"1,2,3",raft,2,1\n'
        '2,users,100,,6,"1,2,3",raft,2,2\n'
    )


async def test_indexes_says_when_the_cluster_does_not_list_them() -> None:
    result = await run(RecordingSession(meta_view=META), ".indexes")
    assert result.code == 0
    assert result.err == "this cluster's meta does not list indexes\n"


async def test_indexes_lists_them_when_meta_has_them() -> None:
    meta = dict(META)
    meta["indexes"] = [
        {
            "name": "by_email",
            "table": "users",
            "schema_sql": "CREATE INDEX by_email ON users(email)",
        },
        {"name": "by_line", "table": "logs", "schema_sql": "CREATE INDEX by_line ON logs(line)"},
    ]
    result = await run(RecordingSession(meta_view=meta), "\\di users", mode=OutputMode.CSV)
    assert (
        result.out
        == "index,table,definition\nby_email,users,CREATE INDEX by_email ON users(email)\n"
    )


async def test_leader_routes_the_key_through_the_gateway_and_names_the_leader() -> None:
    found = select(
        ["range_id", "start_key", "end_key", "group_id", "replicas", "backend", "epoch"],
        (2, 100, None, 6, "1,2,3", "raft", 2),
    )
    session = RecordingSession(
        meta_view=META, results={"SHOW RANGE FROM TABLE users FOR ROW (?)": found}
    )
    result = await run(session, ".leader users 150", mode=OutputMode.CSV)
    assert session.calls[0] == (
        "execute",
        "SHOW RANGE FROM TABLE users FOR ROW (?)",
        (150,),
        "linearizable",
        False,
    )
    assert (
        result.out == "table,key,range_id,group_id,leader,address\nusers,150,2,6,2,127.0.0.1:7002\n"
    )


async def test_split_sends_alter_table_split_with_parameters() -> None:
    session = RecordingSession(default=DDL)
    result = await run(session, ".split \"my table\" AT 100 'm'")
    assert session.calls == [
        (
            "execute",
            'ALTER TABLE "my table" SPLIT AT VALUES (?), (?)',
            (100, "m"),
            "linearizable",
            False,
        )
    ]
    assert result.out == "OK\n"


async def test_backend_and_transfer_use_the_session() -> None:
    session = RecordingSession(backend="paxos")
    result = await run(session, ".backend\n.transfer 6 n3")
    assert result.out == "paxos\n"
    assert session.calls == [("transfer", 6, 3)]
    assert result.err == "group 6: leadership moving to n3\n"


async def test_fault_commands_are_handed_to_the_session() -> None:
    session = RecordingSession()
    result = await run(session, ".partition n1 | n2 n3\n.isolate n2")
    assert result.code == 0
    assert session.calls == [
        ("faults", Partition(sides=((NodeId(1),), (NodeId(2), NodeId(3))))),
        ("faults", Isolate(node=NodeId(2))),
    ]
    assert result.err == "applied partition\napplied isolate\n"


async def test_refused_faults_print_the_sessions_message_and_fail() -> None:
    refusal = "fault injection is disabled: start the cluster with --allow-faults"
    session = RecordingSession(faults_refusal=refusal)
    result = await run(session, ".crash n3\nSELECT 1;")
    assert result.code == 1
    assert result.err == f"t.sql:1: Error (faults_disabled): {refusal}\n"
    assert session.statements == []


def test_exit_codes_are_the_documented_numbers() -> None:
    """0 ok, 1 SQL error, 2 usage, 3 cluster unavailable (issue 6)."""
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]
    assert [c.name for c in ExitCode] == ["OK", "SQL_ERROR", "USAGE", "UNAVAILABLE"]


def test_input_complete_for_pasted_commands_and_sql() -> None:
    assert input_complete("SELECT 1;\n.mode csv")
    assert input_complete(".mode csv\nSELECT 1;")
    assert not input_complete(".mode csv\nSELECT 1")


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [("constraint", 1), ("syntax_error", 1), ("unreachable", 3), ("unavailable", 3)],
)
def test_the_clients_own_exceptions_map_to_exit_codes(code: str, exit_code: int) -> None:
    """The real client's error classes carry ``code`` the way the shell reads it."""
    from shardb.client.errors import error_for
    from shardb.shell import classify_error

    error = error_for(code, "server says no")
    shell_error = classify_error(error)
    assert shell_error is not None
    assert (shell_error.code, shell_error.message, int(shell_error.exit_code)) == (
        code,
        "server says no",
        exit_code,
    )
