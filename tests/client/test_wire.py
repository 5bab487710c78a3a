"""The pure pieces both clients share: addresses, read detection, result checks."""

from __future__ import annotations

import pytest

from shardb.client import wire
from shardb.client.errors import InterfaceError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:7001", (("127.0.0.1", 7001),)),
        ("[::1]:7001", (("::1", 7001),)),
        (("db.local", 5), (("db.local", 5),)),
        (["a:1", ("b", 2)], (("a", 1), ("b", 2))),
    ],
)
def test_addresses_are_parsed_in_the_forms_documented(given: object, expected: object) -> None:
    assert wire.parse_addresses(given) == expected  # type: ignore[arg-type]  # any form


@pytest.mark.parametrize("given", ["nohost", "h:", "h:port", "h:70000", [], 7001])
def test_malformed_addresses_are_interface_errors(given: object) -> None:
    with pytest.raises(InterfaceError):
        wire.parse_addresses(given)  # type: ignore[arg-type]  # deliberately wrong


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT 1", True),
        ("  select * from t", True),
        ("-- why\n/* a\nb */ (SELECT 1)", True),
        ("EXPLAIN DELETE FROM t", True),
        ("SHOW RANGES FROM TABLE t", True),
        ("INSERT INTO t VALUES (1)", False),
        ("WITH x AS (SELECT 1) DELETE FROM t", False),  # WITH may lead a write
        ("ALTER TABLE t SPLIT AT VALUES (5)", False),
        ("/* unterminated", False),
        ("", False),
    ],
)
def test_only_plain_reads_count_as_safe_to_resend(sql: str, read: bool) -> None:
    """A statement is re-sent after a broken connection only if it cannot apply anything."""
    assert wire.is_read(sql) is read


def test_a_result_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(InterfaceError):
        wire.decode_result({"kind": "select", "columns": ["a"], "rows": [[1, 2]], "rowcount": -1})


def test_a_result_value_of_a_foreign_type_is_refused() -> None:
    with pytest.raises(InterfaceError):
        wire.decode_result({"kind": "select", "columns": ["a"], "rows": [[[1]]], "rowcount": -1})
