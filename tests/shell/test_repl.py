"""The interactive shell driven through prompt_toolkit's pipe input, as a user would type.

Keys go in through ``create_pipe_input``; the screen is a ``DummyOutput``. prompt_toolkit loads
history and computes completions asynchronously, so a test types the next keys only once the
shell is ready for them: ``PromptWatcher`` turns prompt_toolkit's own events (a prompt drawn,
the buffer changed) into waits. No sleeps.
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from shardb.shell import Shell, ShellCompleter, prompt_text, schema_words
from shell.doubles import DDL, RecordingSession, select

WAIT_S = 10.0
UP = "\x1b[A"
CTRL_C = "\x03"
CTRL_D = "\x04"
TAB = "\t"

META: dict[str, Any] = {
    "nodes": [],
    "ranges": [],
    "tables": [
        {
            "name": "users",
            "schema_sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, age INTEGER)",
            "pk_column": "id",
            "backend": "raft",
        },
        {
            "name": "orders",
            "schema_sql": "CREATE TABLE orders (oid INTEGER PRIMARY KEY, total REAL)",
            "pk_column": "oid",
            "backend": "paxos",
        },
    ],
}


class PromptWatcher:
    """Counts prompts that are on screen and ready for keys; waits for buffer text."""

    def __init__(self, shell: Shell) -> None:
        self._changed = threading.Condition()
        self._fresh = False
        self.prompts = 0
        app = shell.prompt_session.app
        app.on_reset += self._on_reset
        app.after_render += self._on_render
        self._buffer = shell.prompt_session.default_buffer
        self._buffer.on_text_changed += self._on_text

    def _on_reset(self, _: object) -> None:
        with self._changed:
            self._fresh = True

    def _on_render(self, _: object) -> None:
        with self._changed:
            if self._fresh:
                # First draw of a new prompt: its history load is queued ahead of any key.
                self._fresh = False
                self.prompts += 1
                self._changed.notify_all()

    def _on_text(self, _: object) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wait(self, predicate: Callable[[], bool]) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout=WAIT_S):
                raise AssertionError(
                    f"the shell did not get there: prompt {self.prompts}, "
                    f"buffer {self._buffer.text!r}"
                )

    async def prompt(self, number: int) -> None:
        """Wait until the ``number``-th prompt is ready for keys."""
        await trio.to_thread.run_sync(self._wait, lambda: self.prompts >= number)

    async def text(self, expected: str) -> None:
        """Wait until the buffer holds ``expected``."""
        await trio.to_thread.run_sync(self._wait, lambda: self._buffer.text == expected)


class Driven:
    def __init__(self, shell: Shell, keys: PipeInput, watcher: PromptWatcher) -> None:
        self.shell = shell
        self.keys = keys
        self.watcher = watcher
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.code: int | None = None


@asynccontextmanager
async def driven_shell(
    session: RecordingSession, *, history: History | None = None
) -> AsyncIterator[Driven]:
    """A running shell; leaving the block presses Ctrl-D and waits for it to end."""
    with create_pipe_input() as keys:
        out, err = io.StringIO(), io.StringIO()
        shell = Shell(
            session,
            out=out,
            err=err,
            history=history if history is not None else InMemoryHistory(),
            input=keys,
            output=DummyOutput(),
        )
        driven = Driven(shell, keys, PromptWatcher(shell))
        driven.out, driven.err = out, err

        async def run() -> None:
            driven.code = await shell.run()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            try:
                yield driven
            finally:
                if driven.code is None:
                    # Ctrl-C first: Ctrl-D ends the shell only on an empty buffer.
                    keys.send_text(CTRL_C + CTRL_D)
        assert driven.code == 0


def test_prompt_shows_address_backend_and_consistency() -> None:
    session = RecordingSession(address="127.0.0.1:7001", backend="raft")
    assert prompt_text(session) == "shardb 127.0.0.1:7001 raft/linearizable> "


async def test_enter_inside_a_statement_continues_it_on_a_new_line() -> None:
    """A statement runs only when its ``;`` ends it, not one inside a string."""
    session = RecordingSession()
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("INSERT INTO t\rVALUES (1, 'a;\rb');\r")
        await shell.watcher.prompt(2)
    assert session.statements == ["INSERT INTO t\nVALUES (1, 'a;\nb')"]


async def test_several_statements_in_one_buffer_run_in_order() -> None:
    session = RecordingSession(default=select(["n"], (1,)))
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("SELECT 1; SELECT 2;\r")
        await shell.watcher.prompt(2)
    assert session.statements == ["SELECT 1", "SELECT 2"]
    assert shell.out.getvalue().count("(1 row)") == 2


async def test_up_arrow_recalls_the_previous_statement() -> None:
    session = RecordingSession()
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("SELECT\r42;\r")
        await shell.watcher.prompt(2)
        shell.keys.send_text(UP + "\r")
        await shell.watcher.prompt(3)
    assert session.statements == ["SELECT\n42", "SELECT\n42"]


async def test_history_persists_in_its_file_across_shells(tmp_path: Path) -> None:
    path = tmp_path / "history"
    first = RecordingSession()
    async with driven_shell(first, history=FileHistory(str(path))) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("DELETE FROM t WHERE id = 7;\r")
        await shell.watcher.prompt(2)
    second = RecordingSession()
    async with driven_shell(second, history=FileHistory(str(path))) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text(UP + "\r")
        await shell.watcher.prompt(2)
    assert second.statements == ["DELETE FROM t WHERE id = 7"]


async def test_dot_command_runs_on_enter_and_changes_the_output_mode() -> None:
    session = RecordingSession(default=select(["a", "b"], (1, None)))
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text(".mode csv\r")
        await shell.watcher.prompt(2)
        shell.keys.send_text("SELECT 1;\r")
        await shell.watcher.prompt(3)
    assert shell.out.getvalue() == "a,b\n1,\n"


async def test_consistency_command_changes_the_prompt() -> None:
    session = RecordingSession()
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text(".consistency lease\r")
        await shell.watcher.prompt(2)
        assert prompt_text(session).endswith("raft/lease> ")
    assert session.consistency == "lease"


async def test_quit_command_ends_the_shell() -> None:
    session = RecordingSession()
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("\\q\r")
    assert shell.code == 0


async def test_ctrl_c_drops_the_buffer_and_keeps_the_shell() -> None:
    session = RecordingSession()
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("DELETE FROM t" + CTRL_C)
        await shell.watcher.prompt(2)
        shell.keys.send_text("SELECT 1;\r")
        await shell.watcher.prompt(3)
    assert session.statements == ["SELECT 1"]


async def test_an_error_is_reported_and_the_shell_prompts_again() -> None:
    from shell.doubles import ScriptedError

    session = RecordingSession(
        results={"SELECT x": ScriptedError("sql_error", "no such column: x")}
    )
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("SELECT x;\r")
        await shell.watcher.prompt(2)
        shell.keys.send_text("SELECT 2;\r")
        await shell.watcher.prompt(3)
    assert session.statements == ["SELECT x", "SELECT 2"]
    assert shell.err.getvalue() == "Error (sql_error): no such column: x\n"


async def test_tab_completes_keywords_tables_and_columns_from_meta() -> None:
    session = RecordingSession(meta_view=META)
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        shell.keys.send_text("sel" + TAB)
        await shell.watcher.text("select")
        shell.keys.send_text(" * from us" + TAB)
        await shell.watcher.text("select * from users")
        shell.keys.send_text(" where em" + TAB)
        await shell.watcher.text("select * from users where email")
        shell.keys.send_text(" = 'a';\r")
        await shell.watcher.prompt(2)
    assert session.statements == ["select * from users where email = 'a'"]


async def test_completion_words_refresh_after_ddl() -> None:
    session = RecordingSession(default=DDL)
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        assert not shell.shell.completer.words.tables
        session.meta_view = META
        shell.keys.send_text("CREATE TABLE orders (oid INTEGER PRIMARY KEY, total REAL);\r")
        await shell.watcher.prompt(2)
        assert shell.shell.completer.words.tables == ("orders", "users")
    assert [call[0] for call in session.calls] == ["meta", "execute", "meta"]


def completions(completer: ShellCompleter, text: str) -> list[str]:
    event = CompleteEvent(completion_requested=True)
    return [c.text for c in completer.get_completions(Document(text), event)]


def test_completer_prefers_columns_of_mentioned_tables() -> None:
    """Tables, then columns of the tables in the buffer, then keywords in the typed case."""
    completer = ShellCompleter(schema_words(META))
    assert completions(completer, "SELECT  FROM users WHERE A") == [
        "age",
        "ALTER",
        "AND",
        "AS",
        "ASC",
        "AT",
        "AVG",
    ]
    assert completions(completer, "SELECT * FROM orders WHERE o") == [
        "orders",
        "oid",
        "offset",
        "on",
        "or",
        "order",
    ]


def test_completer_completes_dot_commands() -> None:
    completer = ShellCompleter()
    assert completions(completer, ".ta") == [".tables"]
    assert completions(completer, "\\ti") == ["\\timing"]


def test_schema_words_reads_columns_and_keeps_unreadable_tables() -> None:
    meta = {"tables": [*META["tables"], {"name": "odd", "schema_sql": "not sql at all"}]}
    words = schema_words(meta)
    assert words.tables == ("odd", "orders", "users")
    assert words.columns["users"] == ("id", "email", "age")
    assert words.columns["odd"] == ()


async def test_pasted_commands_and_statements_run_in_order() -> None:
    session = RecordingSession(default=select(["a"], (1,)))
    async with driven_shell(session) as shell:
        await shell.watcher.prompt(1)
        # Bracketed paste: the terminal wraps pasted text so its newlines do not press Enter.
        shell.keys.send_text("\x1b[200~.mode csv\nSELECT 1;\n.headers off\x1b[201~")
        await shell.watcher.text(".mode csv\nSELECT 1;\n.headers off")
        shell.keys.send_text("\r")
        await shell.watcher.prompt(2)
        shell.keys.send_text("SELECT 2;\r")
        await shell.watcher.prompt(3)
    assert session.statements == ["SELECT 1", "SELECT 2"]
    assert shell.out.getvalue() == "a\n1\n1\n"
