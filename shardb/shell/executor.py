"""Running what the user typed: SQL statements and dot-commands, for the REPL and scripts alike.

The REPL hands :meth:`Executor.run_input` one accepted buffer at a time; scripts (``-e``,
``-f``, piped stdin, ``.read``) go through :meth:`Executor.run_text`, which cuts the text into
dot-command lines and SQL chunks the same way the REPL's buffer does. Either way each SQL chunk
is split with ``shardb.sql.split_statements`` (so ``;`` inside strings and comments does not
end a statement) and every statement is sent on its own, as the client protocol requires.

Within one chunk the first failing statement stops the rest: after ``INSERT ...; DELETE ...;``
a failed insert must not be followed by the delete. A script also stops there, returning the
failure's exit code; the REPL reports it and prompts again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from shardb.shell.commands import (
    Backend,
    Command,
    CommandError,
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
    help_text,
    is_command,
    parse_command,
)
from shardb.shell.format import (
    FormatOptions,
    OutputMode,
    format_elapsed,
    render_result,
)
from shardb.shell.session import (
    Cell,
    ExitCode,
    FaultsDisabled,
    Rows,
    Session,
    ShellError,
    StatementResult,
    classify_error,
)
from shardb.sql import SqlError, split_statements

# ``.read`` may nest; a file that reads itself must end with an error, not a stack overflow.
MAX_READ_DEPTH = 16
# A text appended after a buffer to find out whether the buffer's last ';' ends a statement.
_SENTINEL = "__shardb_sentinel__"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def statement_complete(text: str) -> bool:
    """True when ``text`` is whole statements: its last ``;`` really ends one.

    Appending a sentinel statement and splitting tells the two apart: a terminating ``;`` leaves
    the sentinel as a statement of its own, while a ``;`` inside a string, a quoted name or a
    comment (or no ``;`` at all) glues the sentinel onto the unfinished statement. An
    unterminated string or comment cannot even be tokenized: not complete either.
    """
    try:
        statements = split_statements(text + "\n" + _SENTINEL)
    except SqlError:
        return False
    return bool(statements) and statements[-1] == _SENTINEL


def input_complete(text: str) -> bool:
    """Whether the REPL should run ``text`` on Enter (else Enter starts a new line).

    Pasted text may mix dot-command lines and SQL; it is complete when its last piece is a
    command line or statements whose last ``;`` ends them.
    """
    units = list(script_units(text))
    return not units or units[-1].command or statement_complete(units[-1].text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptUnit:
    """A dot-command line or a chunk of SQL, with the script line it starts on (1-based)."""

    text: str
    line: int
    command: bool


def script_units(text: str) -> Iterator[ScriptUnit]:
    """Cut a script into dot-command lines and complete SQL chunks, lazily, in order.

    A line is a command only when it starts with ``.`` or ``\\`` outside a statement; a
    trailing chunk without ``;`` is still run, so ``-e "SELECT 1"`` works.
    """
    buffer: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines(), start=1):
        if not buffer and is_command(line):
            yield ScriptUnit(text=line.strip(), line=number, command=True)
            continue
        if not buffer:
            if not line.strip():
                continue
            start = number
        buffer.append(line)
        chunk = "\n".join(buffer)
        if statement_complete(chunk):
            yield ScriptUnit(text=chunk, line=start, command=False)
            buffer = []
    if buffer:
        yield ScriptUnit(text="\n".join(buffer), line=start, command=False)


def _sql_name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def _cell(value: object) -> Cell:
    """A ``meta`` field as a table cell (lists of ids become ``1,2,3``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or isinstance(value, int | float | str | bytes):
        return value
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _ms(value: object) -> str:
    return f"{value:.3f} ms" if isinstance(value, int | float) else "?"


def format_trace(trace: Mapping[str, Any] | None) -> str:
    """The ``.trace on`` lines for one statement."""
    if not trace:
        return "trace: none returned by the gateway"
    ids = ("ranges", "groups", "leaders")
    parts = [f"route={trace.get('route', '?')}"]
    parts += [f"{key}={','.join(str(i) for i in trace.get(key) or []) or '-'}" for key in ids]
    parts.append(f"retries={trace.get('retries', '?')}")
    timings = [
        f"{name}={_ms(trace[f'{name}_ms'])}"
        for name in ("parse", "route", "consensus", "total")
        if f"{name}_ms" in trace
    ]
    lines = ["trace: " + " ".join(parts)]
    if timings:
        lines.append("trace: " + " ".join(timings))
    return "\n".join(lines)


class _Failed(Exception):
    """A command or statement failed in a way already classified; carries what to print."""

    def __init__(self, error: ShellError) -> None:
        super().__init__(error.message)
        self.error = error


class _Stopped(Exception):
    """A ``.read`` script failed and already said why; only its exit code travels up."""

    def __init__(self, exit_code: ExitCode) -> None:
        super().__init__(exit_code.name)
        self.exit_code = exit_code


class Executor:
    """Runs statements and dot-commands against a :class:`Session`, writing to two streams."""

    def __init__(
        self,
        session: Session,
        *,
        out: TextIO,
        err: TextIO,
        options: FormatOptions | None = None,
        timer: bool = False,
        clock: Callable[[], float] | None = None,
        width: int | None = None,
    ) -> None:
        self.session = session
        self.options = options if options is not None else FormatOptions()
        self.timer = timer
        self.err = err
        self.quit_requested = False
        # Set after DDL and splits so the REPL refreshes table and column completions.
        self.schema_changed = True
        self._stdout = out
        self._out = out
        self._output_file: TextIO | None = None
        self._clock = clock if clock is not None else time.perf_counter
        self._width = width
        self._depth = 0

    @property
    def out(self) -> TextIO:
        """Where results go now (standard output, or the ``.output`` file)."""
        return self._out

    def close(self) -> None:
        """Close a ``.output`` file, if one is open."""
        self._set_output(None)

    # --- entry points -----------------------------------------------------------------------

    async def run_input(self, text: str) -> ExitCode:
        """Run one REPL buffer: dot-command lines and SQL, stopping at the first failure."""
        return await self.run_text(text, source=None)

    async def run_text(self, text: str, *, source: str | None = "<script>") -> ExitCode:
        """Run a script; stop at the first failure and return its exit code.

        ``source`` names the script in error messages (``setup.sql:12: ...``); None omits it.
        """
        for unit in script_units(text):
            if unit.command:
                where = f"{source}:{unit.line}: " if source is not None else ""
                status = await self.run_command_line(unit.text, where=where)
            else:
                status = await self.run_sql(unit.text, source=source, first_line=unit.line)
            if status is not ExitCode.OK:
                return status
            if self.quit_requested:
                break
        return ExitCode.OK

    async def run_command_line(self, line: str, *, where: str = "") -> ExitCode:
        try:
            command = parse_command(line)
        except CommandError as error:
            self._error(f"{where}{error.message}")
            return ExitCode.USAGE
        return await self.run_command(command, where=where)

    async def run_sql(
        self, text: str, *, source: str | None = None, first_line: int = 1
    ) -> ExitCode:
        """Run every statement in ``text`` in order; stop at the first failure."""
        try:
            statements = split_statements(text)
        except SqlError as error:
            where = f"{source}:{first_line}: " if source is not None else ""
            self._error(f"{where}Error (syntax_error): {error.message}")
            return ExitCode.SQL_ERROR
        offset = 0
        for statement in statements:
            offset = max(text.find(statement, offset), offset)
            line = first_line + text.count("\n", 0, offset)
            where = f"{source}:{line}: " if source is not None else ""
            try:
                await self._execute_and_show(statement)
            except _Failed as failed:
                self._error(f"{where}Error ({failed.error.code}): {failed.error.message}")
                return failed.error.exit_code
            offset += len(statement)
        return ExitCode.OK

    async def run_command(self, command: Command, *, where: str = "") -> ExitCode:
        try:
            await self._dispatch(command, where)
        except _Failed as failed:
            self._error(f"{where}Error ({failed.error.code}): {failed.error.message}")
            return failed.error.exit_code
        except CommandError as error:
            self._error(f"{where}{error.message}")
            return ExitCode.USAGE
        except _Stopped as stopped:
            return stopped.exit_code
        return ExitCode.OK

    # --- statements -------------------------------------------------------------------------

    async def _execute(self, sql: str, params: Sequence[Cell] = ()) -> StatementResult:
        try:
            return await self.session.execute(sql, params)
        except Exception as error:
            shell_error = classify_error(error)
            if shell_error is None:
                raise
            raise _Failed(shell_error) from error

    async def _meta(self) -> Mapping[str, Any]:
        try:
            return await self.session.meta()
        except Exception as error:
            shell_error = classify_error(error)
            if shell_error is None:
                raise
            raise _Failed(shell_error) from error

    async def _execute_and_show(self, sql: str, params: Sequence[Cell] = ()) -> None:
        started = self._clock()
        result = await self._execute(sql, params)
        elapsed_ms = (self._clock() - started) * 1000.0
        if result.kind == "ddl" or (result.kind == "admin" and not result.columns):
            self.schema_changed = True
        self._show(result, elapsed_ms=elapsed_ms)
        if self.session.trace:
            self.err.write(format_trace(result.trace) + "\n")

    def _show(self, result: StatementResult, *, elapsed_ms: float | None = None) -> None:
        timed = elapsed_ms if self.timer else None
        human = self.options.mode.is_human
        render_result(
            result,
            self._out,
            self.options,
            elapsed_ms=timed if human else None,
            width=self._width,
        )
        if timed is not None and not human:
            self.err.write(format_elapsed(timed) + "\n")
        self._out.flush()

    # --- dot-commands -----------------------------------------------------------------------

    async def _dispatch(self, command: Command, where: str) -> None:
        match command:
            case Help():
                self._write(help_text())
            case Quit():
                self.quit_requested = True
            case Tables():
                await self._show_tables()
            case Schema(table=table):
                await self._show_schema(table)
            case Indexes(table=table):
                await self._show_indexes(table)
            case Mode(mode=None):
                self._write(self.options.mode.value)
            case Mode(mode=mode) if mode is not None:
                self.options.mode = mode
            case Expanded(setting=setting):
                self._set_expanded(setting)
            case Headers(on=on):
                self.options.headers = not self.options.headers if on is None else on
                self._note(f"headers {'on' if self.options.headers else 'off'}")
            case Timer(on=on):
                self.timer = not self.timer if on is None else on
                self._note(f"timer {'on' if self.timer else 'off'}")
            case Trace(on=on):
                self.session.trace = not self.session.trace if on is None else on
                self._note(f"trace {'on' if self.session.trace else 'off'}")
            case Read(path=path):
                await self._read(path, where)
            case Output(path=path):
                self._set_output(path)
            case Nodes():
                await self._show_nodes()
            case Groups():
                await self._show_groups()
            case Ranges(table=table):
                await self._show_ranges(table)
            case Leader(table=table, key=key):
                await self._show_leader(table, key)
            case Consistency(level=None):
                self._write(self.session.consistency)
            case Consistency(level=level) if level is not None:
                self.session.consistency = level
                self._note(f"consistency {level}")
            case Backend():
                self._write(self.session.backend)
            case Split(table=table, keys=keys):
                values = ", ".join("(?)" for _ in keys)
                await self._execute_and_show(
                    f"ALTER TABLE {_sql_name(table)} SPLIT AT VALUES {values}", keys
                )
                self.schema_changed = True
            case Transfer(group=group, node=node):
                self._note(await self._admin(self.session.transfer_leader(group, node)))
            case Fault(command=fault):
                try:
                    self._note(await self._admin(self.session.faults(fault)))
                except FaultsDisabled as refused:
                    raise _Failed(
                        ShellError(
                            code="faults_disabled",
                            message=refused.message,
                            exit_code=ExitCode.SQL_ERROR,
                        )
                    ) from refused

    async def _admin(self, call: Awaitable[str]) -> str:
        try:
            message = await call
        except FaultsDisabled:
            raise
        except Exception as error:
            shell_error = classify_error(error)
            if shell_error is None:
                raise
            raise _Failed(shell_error) from error
        return message

    def _set_expanded(self, setting: str | None) -> None:
        if setting is None:
            vertical = self.options.mode is not OutputMode.VERTICAL
            setting = "on" if vertical else "off"
        if setting == "on":
            self.options.mode = OutputMode.VERTICAL
        else:
            self.options.mode = OutputMode.TABLE
            self.options.auto_vertical = setting == "auto"
        self._note(f"expanded display {setting}")

    async def _read(self, path: str, where: str) -> None:
        if self._depth >= MAX_READ_DEPTH:
            raise CommandError(f".read nested deeper than {MAX_READ_DEPTH} files: {path}")
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read {path}: {error}") from error
        self._depth += 1
        try:
            status = await self.run_text(text, source=path)
        finally:
            self._depth -= 1
        if status is not ExitCode.OK:
            raise _Stopped(status)

    def _set_output(self, path: str | None) -> None:
        if path is not None:
            try:
                new_file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by .output)
            except OSError as error:
                raise CommandError(f"cannot write {path}: {error}") from error
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None
        if path is None:
            self._out = self._stdout
        else:
            self._output_file = new_file
            self._out = new_file

    # --- cluster views ----------------------------------------------------------------------

    async def _tables(self, table: str | None) -> list[Mapping[str, Any]]:
        tables = sorted((await self._meta()).get("tables", []), key=lambda t: str(t["name"]))
        if table is None:
            return tables
        chosen = [t for t in tables if t["name"] == table]
        if not chosen:
            raise _Failed(
                ShellError(
                    code="unknown_table",
                    message=f"no such table: {table}",
                    exit_code=ExitCode.SQL_ERROR,
                )
            )
        return chosen

    async def _show_tables(self) -> None:
        rows = tuple(
            (_cell(t["name"]), _cell(t.get("pk_column")), _cell(t.get("backend")))
            for t in await self._tables(None)
        )
        self._show(Rows(columns=("table", "primary_key", "backend"), rows=rows))

    async def _show_schema(self, table: str | None) -> None:
        for info in await self._tables(table):
            self._write(str(info["schema_sql"]).strip().rstrip(";") + ";")

    async def _show_indexes(self, table: str | None) -> None:
        meta = await self._meta()
        if table is not None:
            await self._tables(table)
        if "indexes" not in meta:
            self._note("this cluster's meta does not list indexes")
            return
        indexes = sorted(meta["indexes"], key=lambda i: (str(i["table"]), str(i["name"])))
        rows = tuple(
            (_cell(i["name"]), _cell(i["table"]), _cell(i.get("schema_sql")))
            for i in indexes
            if table is None or i["table"] == table
        )
        self._show(Rows(columns=("index", "table", "definition"), rows=rows))

    async def _show_nodes(self) -> None:
        nodes = sorted((await self._meta()).get("nodes", []), key=lambda n: int(n["node_id"]))
        rows = tuple(
            (_cell(n["node_id"]), _cell(n.get("address")), _cell(n.get("alive"))) for n in nodes
        )
        self._show(Rows(columns=("node_id", "address", "alive"), rows=rows))

    async def _show_groups(self) -> None:
        groups: dict[int, list[Mapping[str, Any]]] = {}
        for descriptor in (await self._meta()).get("ranges", []):
            groups.setdefault(int(descriptor["group_id"]), []).append(descriptor)
        rows = []
        for group_id in sorted(groups):
            ranges = groups[group_id]
            first = ranges[0]
            rows.append(
                (
                    group_id,
                    _cell(first.get("backend")),
                    _cell(first.get("leader")),
                    _cell(first.get("replicas")),
                    _cell([r["range_id"] for r in ranges]),
                )
            )
        self._show(
            Rows(columns=("group_id", "backend", "leader", "replicas", "ranges"), rows=tuple(rows))
        )

    async def _show_ranges(self, table: str | None) -> None:
        if table is not None:
            await self._tables(table)
        columns = (
            "range_id",
            "table",
            "start_key",
            "end_key",
            "group_id",
            "replicas",
            "backend",
            "epoch",
            "leader",
        )
        rows = tuple(
            tuple(_cell(r.get(column)) for column in columns)
            for r in (await self._meta()).get("ranges", [])
            if table is None or r.get("table") == table
        )
        self._show(Rows(columns=columns, rows=rows))

    async def _show_leader(self, table: str, key: int | str) -> None:
        # The gateway routes the key (it knows the key type and the current range map); the
        # leader comes from the cluster view, which SHOW RANGE does not carry.
        found = await self._execute(f"SHOW RANGE FROM TABLE {_sql_name(table)} FOR ROW (?)", (key,))
        if not found.rows or "range_id" not in found.columns:
            raise _Failed(
                ShellError(
                    code="internal",
                    message="SHOW RANGE returned no range",
                    exit_code=ExitCode.SQL_ERROR,
                )
            )
        row = dict(zip(found.columns, found.rows[0], strict=True))
        meta = await self._meta()
        descriptor: Mapping[str, Any] = next(
            (r for r in meta.get("ranges", []) if r.get("range_id") == row["range_id"]), {}
        )
        leader = descriptor.get("leader")
        addresses = {n.get("node_id"): n.get("address") for n in meta.get("nodes", [])}
        self._show(
            Rows(
                columns=("table", "key", "range_id", "group_id", "leader", "address"),
                rows=(
                    (
                        table,
                        key,
                        _cell(row["range_id"]),
                        _cell(row.get("group_id")),
                        _cell(leader),
                        _cell(addresses.get(leader)),
                    ),
                ),
            )
        )

    # --- output -----------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def _error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()
