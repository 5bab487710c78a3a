"""Result formatting: every output mode as golden text, NULL and blobs, footers, colour rules."""

from __future__ import annotations

import io
import json

import pytest

from shardb.shell import FormatOptions, OutputMode, format_value, render_result
from shell.doubles import DDL, FakeResult, select, write

MIXED = select(
    ["id", "name", "data", "x"],
    (1, "alpha", b"\x0a\xff", 1.5),
    (22, None, None, None),
    (3, "two\nlines", "", 2.0),
)


class TerminalStream(io.StringIO):
    """A text stream that says it is a terminal, as a user's console would."""

    def isatty(self) -> bool:
        return True


def render(
    result: FakeResult,
    mode: OutputMode,
    *,
    headers: bool = True,
    elapsed_ms: float | None = None,
) -> str:
    out = io.StringIO()
    render_result(result, out, FormatOptions(mode=mode, headers=headers), elapsed_ms=elapsed_ms)
    return out.getvalue()


def test_table_mode_aligns_numbers_right_and_shows_null_blob_and_empty_apart() -> None:
    """NULL, the empty string and a blob each look different; numeric columns align right."""
    assert render(MIXED, OutputMode.TABLE) == (
        "┌────┬───────┬─────────┬──────┐\n"
        "│ id │ name  │ data    │    x │\n"
        "├────┼───────┼─────────┼──────┤\n"
        "│  1 │ alpha │ X'0AFF' │  1.5 │\n"
        "│ 22 │ NULL  │ NULL    │ NULL │\n"
        "│  3 │ two   │         │  2.0 │\n"
        "│    │ lines │         │      │\n"
        "└────┴───────┴─────────┴──────┘\n"
        "(3 rows)\n"
    )


def test_table_mode_without_headers_drops_header_row_and_footer() -> None:
    assert render(select(["a"], (1,)), OutputMode.TABLE, headers=False) == ("┌───┐\n│ 1 │\n└───┘\n")


def test_vertical_mode_prints_one_column_per_line() -> None:
    """Like psql's \\x: numbered records, continuation lines for multi-line values."""
    assert render(MIXED, OutputMode.VERTICAL) == (
        "-[ RECORD 1 ]----\n"
        "id   | 1\n"
        "name | alpha\n"
        "data | X'0AFF'\n"
        "x    | 1.5\n"
        "-[ RECORD 2 ]----\n"
        "id   | 22\n"
        "name | NULL\n"
        "data | NULL\n"
        "x    | NULL\n"
        "-[ RECORD 3 ]----\n"
        "id   | 3\n"
        "name | two\n"
        "     | lines\n"
        "data | \n"
        "x    | 2.0\n"
        "(3 rows)\n"
    )


def test_vertical_mode_without_headers_separates_records_by_blank_lines() -> None:
    result = select(["a", "b"], (1, "x"), (2, "y"))
    assert render(result, OutputMode.VERTICAL, headers=False) == "a | 1\nb | x\n\na | 2\nb | y\n"


def test_csv_quotes_only_when_needed_and_keeps_empty_string_apart_from_null() -> None:
    """NULL is an empty field; the empty string is ``""`` (RFC 4180 otherwise)."""
    result = select(["id", "v"], (1, 'say "hi", ok'), (2, None), (3, ""), (4, " pad"))
    assert render(result, OutputMode.CSV) == ('id,v\n1,"say ""hi"", ok"\n2,\n3,""\n4," pad"\n')


def test_csv_with_headers_off_is_rows_only() -> None:
    assert render(MIXED, OutputMode.CSV, headers=False) == (
        '1,alpha,X\'0AFF\',1.5\n22,,,\n3,"two\nlines","",2.0\n'
    )


def test_tsv_escapes_tabs_newlines_backslashes_and_writes_null_as_backslash_n() -> None:
    result = select(["a", "b"], ("x\ty", "c:\\d"), (None, "l1\nl2"))
    assert render(result, OutputMode.TSV) == "a\tb\nx\\ty\tc:\\\\d\n\\N\tl1\\nl2\n"


def test_jsonl_writes_one_object_per_row() -> None:
    assert render(MIXED, OutputMode.JSONL) == (
        '{"id": 1, "name": "alpha", "data": "X\'0AFF\'", "x": 1.5}\n'
        '{"id": 22, "name": null, "data": null, "x": null}\n'
        '{"id": 3, "name": "two\\nlines", "data": "", "x": 2.0}\n'
    )


def test_json_writes_one_array_that_parses() -> None:
    text = render(MIXED, OutputMode.JSON)
    assert text == (
        "[\n"
        '  {"id": 1, "name": "alpha", "data": "X\'0AFF\'", "x": 1.5},\n'
        '  {"id": 22, "name": null, "data": null, "x": null},\n'
        '  {"id": 3, "name": "two\\nlines", "data": "", "x": 2.0}\n'
        "]\n"
    )
    assert json.loads(text)[1] == {"id": 22, "name": None, "data": None, "x": None}


def test_json_of_no_rows_is_an_empty_array() -> None:
    assert render(select(["a"]), OutputMode.JSON) == "[]\n"


def test_json_keys_stay_unique_when_a_column_name_repeats() -> None:
    assert render(select(["a", "a", "a"], (1, 2, 3)), OutputMode.JSONL) == (
        '{"a": 1, "a:2": 2, "a:3": 3}\n'
    )


def test_json_spells_non_finite_floats_as_text() -> None:
    """JSON has no infinity; SQLite does (1e999), so it is written as text, never invalid."""
    text = render(select(["f"], (float("inf"),), (float("-inf"),)), OutputMode.JSONL)
    assert [json.loads(line)["f"] for line in text.splitlines()] == ["inf", "-inf"]


@pytest.mark.parametrize("mode", [OutputMode.TABLE, OutputMode.VERTICAL])
def test_human_footers_count_rows_and_changes(mode: OutputMode) -> None:
    assert render(select(["a"], (1,)), mode).endswith("(1 row)\n")
    assert render(select(["a"]), mode).endswith("(0 rows)\n")
    assert render(write(1), mode) == "1 row changed\n"
    assert render(write(5), mode) == "5 rows changed\n"
    assert render(DDL, mode) == "OK\n"


@pytest.mark.parametrize("mode", [OutputMode.CSV, OutputMode.TSV, OutputMode.JSONL])
def test_machine_modes_print_nothing_for_writes(mode: OutputMode) -> None:
    """Machine output is data only: a script's INSERTs do not pollute a CSV export."""
    assert render(write(3), mode) == ""
    assert render(DDL, mode) == ""


def test_timing_follows_the_footer_in_human_modes() -> None:
    assert render(write(2), OutputMode.TABLE, elapsed_ms=12.3456) == (
        "2 rows changed\nTime: 12.346 ms\n"
    )


def test_format_value_spells_null_blobs_and_floats() -> None:
    assert [format_value(v) for v in (None, b"\x00\xab", 0.1, 10**20, "x")] == [
        "NULL",
        "X'00AB'",
        "0.1",
        "100000000000000000000",
        "x",
    ]


def test_no_escape_codes_when_the_stream_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pipe gets plain text even when the environment asks for colour."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b" not in render(MIXED, OutputMode.TABLE)
    assert "\x1b" not in render(MIXED, OutputMode.VERTICAL)


def test_null_is_dim_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = TerminalStream()
    render_result(select(["a"], (None,)), out, FormatOptions(), width=80)
    assert "\x1b[2mNULL\x1b[0m" in out.getvalue()


def test_wide_rows_switch_to_vertical_on_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like psql's ``\\x auto``: a table wider than the terminal is shown as records."""
    monkeypatch.setenv("NO_COLOR", "1")
    wide = select(["id", "description"], (1, "word " * 20))
    narrow = TerminalStream()
    render_result(wide, narrow, FormatOptions(), width=40)
    assert "-[ RECORD 1 ]" in narrow.getvalue()
    roomy = TerminalStream()
    render_result(wide, roomy, FormatOptions(), width=200)
    assert "-[ RECORD 1 ]" not in roomy.getvalue()
    fixed = TerminalStream()
    render_result(wide, fixed, FormatOptions(auto_vertical=False), width=40)
    assert "-[ RECORD 1 ]" not in fixed.getvalue()


def test_piped_tables_are_never_wrapped() -> None:
    """Without a terminal there is no width to fit: a long value stays on one line."""
    long_value = "v" * 300
    text = render(select(["a"], (long_value,)), OutputMode.TABLE)
    assert f"│ {long_value} │\n" in text
