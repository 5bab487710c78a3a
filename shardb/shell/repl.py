"""The interactive shell (prompt_toolkit) and the script runner behind ``shardb sql``.

prompt_toolkit runs on asyncio and the client on trio, so each prompt runs in a worker thread
(``trio.to_thread.run_sync``) while statements run on trio between prompts; the two never run
at once, so the terminal has one writer at a time.

Enter runs the buffer only when it is complete (a dot-command, or statements whose last ``;``
really ends one; see :func:`shardb.shell.executor.input_complete`); otherwise it adds a line.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import trio
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import Output
from pygments.lexers.sql import SqlLexer

from shardb.shell.commands import COMMAND_WORDS, is_command
from shardb.shell.executor import Executor, input_complete
from shardb.shell.format import FormatOptions
from shardb.shell.session import ExitCode, Session, classify_error
from shardb.sql import SqlError
from shardb.sql.catalog import parse_create_table

DEFAULT_HISTORY_PATH = Path("~/.shardb_history")

#: Words offered by completion besides table and column names: the statements shardb accepts
#: and the clauses, functions and types they use.
KEYWORDS: tuple[str, ...] = (
    "ALTER", "AND", "AS", "ASC", "AT", "AVG", "BACKEND", "BETWEEN", "BLOB", "BY", "CASE",
    "CAST", "COALESCE", "COUNT", "CREATE", "DEFAULT", "DELETE", "DESC", "DISTINCT", "DROP",
    "ELSE", "END", "EXISTS", "EXPLAIN", "FOR", "FROM", "GROUP", "HAVING", "IF", "IFNULL", "IN",
    "INDEX", "INSERT", "INTEGER", "INTO", "IS", "KEY", "LENGTH", "LIKE", "LIMIT", "LOWER",
    "MAX", "MIN", "NOT", "NULL", "OFFSET", "ON", "OR", "ORDER", "PRIMARY", "RANGE", "RANGES",
    "REAL", "REPLACE", "ROW", "SELECT", "SET", "SHARDS", "SHOW", "SPLIT", "STRICT", "SUM",
    "TABLE", "TEXT", "THEN", "TOTAL", "UPDATE", "UPPER", "VALUES", "WHEN", "WHERE", "WITH",
)  # fmt: skip


def prompt_text(session: Session) -> str:
    """``shardb 127.0.0.1:7001 raft/linearizable> ``."""
    return f"shardb {session.address} {session.backend}/{session.consistency}> "


# --- completion -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaWords:
    """Table names and each table's columns, from the cluster's ``meta``."""

    tables: tuple[str, ...] = ()
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def schema_words(meta: Mapping[str, Any]) -> SchemaWords:
    """Read table and column names out of ``meta``'s CREATE TABLE texts."""
    columns: dict[str, tuple[str, ...]] = {}
    for table in sorted(meta.get("tables", []), key=lambda t: str(t["name"])):
        name = str(table["name"])
        try:
            columns[name] = parse_create_table(str(table.get("schema_sql", ""))).schema.column_names
        except SqlError:
            # A definition this version cannot read still completes by its table name.
            columns[name] = ()
    return SchemaWords(tables=tuple(columns), columns=columns)


class ShellCompleter(Completer):
    """Completes dot-commands, SQL keywords, table names and column names.

    Columns of the tables the buffer mentions come first; with none mentioned, every
    table's columns are offered.
    """

    def __init__(self, words: SchemaWords | None = None) -> None:
        self.words = words if words is not None else SchemaWords()

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        before = document.text_before_cursor
        if is_command(before) and " " not in before.strip():
            prefix = before.strip()
            for word in COMMAND_WORDS:
                if word.startswith(prefix):
                    yield Completion(word, start_position=-len(prefix))
            return
        prefix = document.get_word_before_cursor(pattern=None)
        if not prefix or not (prefix[0].isalpha() or prefix[0] == "_"):
            if not complete_event.completion_requested:
                return
            prefix = ""
        lower = prefix.lower()
        seen: set[str] = set()
        for candidate, meta in self._candidates(document.text):
            if candidate.lower().startswith(lower) and candidate not in seen:
                seen.add(candidate)
                yield Completion(candidate, start_position=-len(prefix), display_meta=meta)
        for keyword in KEYWORDS:
            if keyword.lower().startswith(lower):
                # Keep the case the user types in: ``sel`` completes to ``select``.
                text = keyword.lower() if prefix.islower() else keyword
                yield Completion(text, start_position=-len(prefix), display_meta="keyword")

    def _candidates(self, text: str) -> Iterable[tuple[str, str]]:
        words = set(text.lower().replace(",", " ").replace("(", " ").split())
        mentioned = [t for t in self.words.tables if t.lower() in words]
        for table in self.words.tables:
            yield table, "table"
        for table in mentioned or self.words.tables:
            for column in self.words.columns.get(table, ()):
                yield column, f"{table} column"


# --- the REPL -------------------------------------------------------------------------------


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.complete_state is not None and buffer.complete_state.current_completion:
            # Enter on a highlighted completion accepts it, as in most shells.
            buffer.apply_completion(buffer.complete_state.current_completion)
            return
        if input_complete(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    return bindings


def _continuation(width: int, line_number: int, is_soft_wrap: int) -> str:
    del line_number, is_soft_wrap
    return "...> ".rjust(width)


def make_prompt_session(
    *,
    history: History,
    completer: Completer | None = None,
    input: Input | None = None,
    output: Output | None = None,
) -> PromptSession[str]:
    """The prompt_toolkit session: multi-line SQL, highlighting, completion, history."""
    return PromptSession(
        multiline=True,
        key_bindings=_key_bindings(),
        prompt_continuation=_continuation,
        lexer=PygmentsLexer(SqlLexer),
        completer=completer,
        complete_while_typing=False,
        history=history,
        enable_history_search=False,
        input=input,
        output=output,
    )


async def _refresh_words(session: Session, completer: ShellCompleter) -> None:
    try:
        meta = await session.meta()
    except Exception as error:
        if classify_error(error) is None:
            raise
        # Completion is a convenience: keep the old words; the next statement reports errors.
        return
    completer.words = schema_words(meta)


class Shell:
    """The interactive shell: one prompt_toolkit session feeding one :class:`Executor`.

    ``history`` (any prompt_toolkit History) wins over ``history_path`` (a FileHistory file,
    default ``~/.shardb_history``). ``input``/``output`` are prompt_toolkit's, for tests and
    embedding; results go to ``out`` and messages to ``err`` (default stdout/stderr).
    """

    def __init__(
        self,
        session: Session,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        history_path: Path | None = None,
        history: History | None = None,
        options: FormatOptions | None = None,
        input: Input | None = None,
        output: Output | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.session = session
        self.executor = Executor(
            session,
            out=out if out is not None else sys.stdout,
            err=err if err is not None else sys.stderr,
            options=options,
            clock=clock,
        )
        if history is None:
            path = (history_path or DEFAULT_HISTORY_PATH).expanduser()
            history = FileHistory(str(path))
        self.completer = ShellCompleter()
        self.prompt_session = make_prompt_session(
            history=history, completer=self.completer, input=input, output=output
        )

    async def run(self) -> int:
        """Prompt and run until ``.quit`` or end of input (Ctrl-D); return the exit code."""
        executor = self.executor
        try:
            while not executor.quit_requested:
                if executor.schema_changed:
                    executor.schema_changed = False
                    await _refresh_words(self.session, self.completer)
                ask = functools.partial(
                    self.prompt_session.prompt, prompt_text(self.session), handle_sigint=False
                )
                try:
                    # Ctrl-C at the prompt is a key press (the terminal is in raw mode), which
                    # prompt_toolkit turns into KeyboardInterrupt: drop the buffer, ask again.
                    text = await trio.to_thread.run_sync(ask)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                await executor.run_input(text)
        finally:
            executor.close()
        return int(ExitCode.OK)


async def run_shell(
    session: Session,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    history_path: Path | None = None,
    history: History | None = None,
    options: FormatOptions | None = None,
    input: Input | None = None,
    output: Output | None = None,
    clock: Callable[[], float] | None = None,
) -> int:
    """Run the interactive shell (see :class:`Shell`) and return its exit code."""
    shell = Shell(
        session,
        out=out,
        err=err,
        history_path=history_path,
        history=history,
        options=options,
        input=input,
        output=output,
        clock=clock,
    )
    return await shell.run()


async def run_script(
    session: Session,
    text: str,
    out: TextIO,
    err: TextIO,
    *,
    options: FormatOptions | None = None,
    source: str = "<script>",
    clock: Callable[[], float] | None = None,
) -> int:
    """Run ``text`` (``-e``, ``-f``, piped stdin) and return the exit code.

    0 when every statement and command succeeded; otherwise the script stops at the first
    failure: 1 for an SQL error (or a refused command), 2 for a malformed dot-command or an
    unreadable file, 3 when the cluster is unavailable or could not decide.
    """
    executor = Executor(
        session,
        out=out,
        err=err,
        options=options,
        clock=clock,
    )
    try:
        return int(await executor.run_text(text, source=source))
    finally:
        executor.close()
