"""Rendering statement results: aligned tables, vertical records, CSV, TSV, JSON lines, JSON.

Human modes (``table``, ``vertical``) print a footer (``(3 rows)``, ``2 rows changed``) and the
time when asked; machine modes print rows only, so ``--format csv > out.csv`` is just data.
NULL stays distinguishable from text in every mode: a dim ``NULL`` in human modes, an empty
unquoted CSV field (the empty string is ``""``), ``\\N`` in TSV (PostgreSQL's text format),
``null`` in JSON. Blobs are shown as SQL literals ``X'0AFF'``.

Colour and styles come from rich, which emits none when the stream is not a terminal; widths
are bounded only on a terminal, so piped tables are never wrapped.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from shardb.shell.session import Cell, StatementResult

NULL_TEXT = "NULL"
# A piped table has no width to fit; rich needs some bound, so give it one no row will reach.
_UNBOUNDED_WIDTH = 1_000_000


class OutputMode(enum.Enum):
    TABLE = "table"
    VERTICAL = "vertical"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    JSON = "json"

    @property
    def is_human(self) -> bool:
        return self in (OutputMode.TABLE, OutputMode.VERTICAL)


@dataclass(slots=True, kw_only=True)
class FormatOptions:
    """How results are shown; the shell's dot-commands change these in place."""

    mode: OutputMode = OutputMode.TABLE
    headers: bool = True
    # psql's ``\\x auto``: a table wider than the terminal is shown as vertical records instead.
    auto_vertical: bool = True


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def make_console(stream: TextIO, *, width: int | None = None) -> Console:
    """A rich console on ``stream``: styled only on a terminal, never wrapping piped output."""
    terminal = is_terminal(stream)
    return Console(
        file=stream,
        # Explicit, so FORCE_COLOR / TERM in the environment cannot put escapes into a pipe.
        force_terminal=terminal,
        force_jupyter=False,
        no_color=not terminal or None,
        color_system="auto" if terminal else None,
        width=width if width is not None else (None if terminal else _UNBOUNDED_WIDTH),
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )


def format_value(value: Cell) -> str:
    """A cell as plain text (NULL as ``NULL``, blobs as ``X'..'``)."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, bytes):
        return "X'" + value.hex().upper() + "'"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _styled(value: Cell) -> Text:
    if value is None:
        return Text(NULL_TEXT, style="dim")
    return Text(format_value(value))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def footer(result: StatementResult) -> str:
    """The line under a result in human modes."""
    if result.columns:
        return f"({_plural(len(result.rows), 'row')})"
    if result.kind == "write":
        return f"{_plural(result.rowcount, 'row')} changed"
    return "OK"


def format_elapsed(elapsed_ms: float) -> str:
    return f"Time: {elapsed_ms:.3f} ms"


def render_result(
    result: StatementResult,
    stream: TextIO,
    options: FormatOptions,
    *,
    elapsed_ms: float | None = None,
    width: int | None = None,
) -> None:
    """Write ``result`` to ``stream`` in ``options.mode``.

    ``elapsed_ms`` (when the timer is on) is printed after the footer in human modes; machine
    modes leave timing to the caller, who sends it to stderr. ``width`` overrides the terminal
    width (tests; None: the terminal's, or unbounded when ``stream`` is not a terminal).
    """
    mode = options.mode
    if mode.is_human:
        console = make_console(stream, width=width)
        if result.columns:
            if mode is OutputMode.TABLE:
                table = _rich_table(result, options.headers)
                if options.auto_vertical and _too_wide(console, table):
                    _print_vertical(console, result, options.headers)
                else:
                    console.print(table)
            else:
                _print_vertical(console, result, options.headers)
        if options.headers or not result.columns:
            console.print(Text(footer(result)))
        if elapsed_ms is not None:
            console.print(Text(format_elapsed(elapsed_ms)))
        return
    if not result.columns:
        # Writes and DDL carry no rows; machine output stays pure data.
        return
    match mode:
        case OutputMode.CSV:
            _write_delimited(stream, result, options.headers, ",", _csv_field)
        case OutputMode.TSV:
            _write_delimited(stream, result, options.headers, "\t", _tsv_field)
        case OutputMode.JSONL:
            for row in _json_rows(result):
                stream.write(row + "\n")
        case OutputMode.JSON:
            rows = _json_rows(result)
            if not rows:
                stream.write("[]\n")
            else:
                stream.write("[\n" + ",\n".join("  " + row for row in rows) + "\n]\n")


# --- table and vertical ---------------------------------------------------------------------


def _is_numeric_column(rows: Sequence[Sequence[Cell]], index: int) -> bool:
    values = [row[index] for row in rows if row[index] is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def _rich_table(result: StatementResult, headers: bool) -> Table:
    table = Table(box=box.SQUARE, show_header=headers, header_style="bold", pad_edge=True)
    for index, name in enumerate(result.columns):
        numeric = _is_numeric_column(result.rows, index)
        table.add_column(Text(name), justify="right" if numeric else "left", overflow="fold")
    for row in result.rows:
        table.add_row(*(_styled(value) for value in row))
    return table


def _too_wide(console: Console, table: Table) -> bool:
    if not console.is_terminal:
        return False
    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED_WIDTH), table)
    return natural.maximum > console.width


def _print_vertical(console: Console, result: StatementResult, headers: bool) -> None:
    """psql's expanded display: one ``name | value`` line per column, records numbered."""
    name_width = max((len(name) for name in result.columns), default=0)
    for number, row in enumerate(result.rows, start=1):
        if headers:
            console.print(Text(f"-[ RECORD {number} ]" + "-" * max(name_width - 4, 4)))
        elif number > 1:
            console.print()
        for name, value in zip(result.columns, row, strict=True):
            lines = _styled(value).split("\n")
            first = Text(name.ljust(name_width) + " | ")
            first.append_text(lines[0])
            console.print(first)
            for more in lines[1:]:
                line = Text(" " * name_width + " | ")
                line.append_text(more)
                console.print(line)


# --- machine formats ------------------------------------------------------------------------


def _csv_field(value: Cell) -> str:
    if value is None:
        return ""
    text = format_value(value)
    # RFC 4180 quoting, plus quoting the empty string so it differs from NULL (Python 3.11's
    # csv module has no QUOTE_NOTNULL to say that).
    if text == "" or any(c in text for c in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def _tsv_field(value: Cell) -> str:
    if value is None:
        return "\\N"
    text = format_value(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _write_delimited(
    stream: TextIO,
    result: StatementResult,
    headers: bool,
    separator: str,
    quote: Callable[[Cell], str],
) -> None:
    if headers:
        stream.write(separator.join(quote(name) for name in result.columns) + "\n")
    for row in result.rows:
        stream.write(separator.join(quote(value) for value in row) + "\n")


def _unique_keys(columns: Sequence[str]) -> list[str]:
    """Column names as JSON keys; a repeated name (``SELECT a, a``) gets ``:2``, ``:3``."""
    seen: dict[str, int] = {}
    keys: list[str] = []
    for name in columns:
        count = seen.get(name, 0) + 1
        seen[name] = count
        keys.append(name if count == 1 else f"{name}:{count}")
    return keys


def _json_value(value: Cell) -> int | float | str | None:
    if isinstance(value, bytes):
        return format_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN or infinity; SQLite can hold both (1e999).
        return repr(value)
    return value


def _json_rows(result: StatementResult) -> list[str]:
    keys = _unique_keys(result.columns)
    return [
        json.dumps(
            {key: _json_value(value) for key, value in zip(keys, row, strict=True)},
            ensure_ascii=False,
            allow_nan=False,
        )
        for row in result.rows
    ]
