"""SQLite value semantics the gateway needs to reproduce exactly: ordering, collations, affinity.

The merge step sorts, groups and compares values that came out of several SQLite databases, and
the result must equal what one SQLite database would give. These helpers follow the SQLite
documentation "Datatypes In SQLite" (sections 3 "Type Affinity", 4.1 "Sort Order", 4.2 "Type
Conversions Prior To Comparison", 7 "Collating Sequences").
"""

from __future__ import annotations

import enum
import math
import re
from typing import TypeAlias

Value: TypeAlias = int | float | str | bytes | None
"""A SQLite value as Python's sqlite3/apsw return it (bool binds as int)."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class Collation(enum.Enum):
    BINARY = "BINARY"
    NOCASE = "NOCASE"
    RTRIM = "RTRIM"


def collation_named(name: str) -> Collation | None:
    """The built-in collation called ``name`` (case-insensitive), or None if not built in."""
    try:
        return Collation(name.upper())
    except ValueError:
        return None


class Affinity(enum.Enum):
    INTEGER = "INTEGER"
    TEXT = "TEXT"
    BLOB = "BLOB"
    REAL = "REAL"
    NUMERIC = "NUMERIC"


def affinity_of(declared_type: str) -> Affinity:
    """Column affinity from a declared type, by the five rules of "Datatypes In SQLite" 3.1."""
    upper = declared_type.upper()
    if "INT" in upper:
        return Affinity.INTEGER
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return Affinity.TEXT
    if "BLOB" in upper or not upper.strip():
        return Affinity.BLOB
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return Affinity.REAL
    return Affinity.NUMERIC


# SQLite accepts surrounding whitespace when it converts text to a number (sqlite3AtoF).
_NUMBER_TEXT = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\Z")
_INTEGER_TEXT = re.compile(r"[+-]?\d+\Z")
_NUMBER_PREFIX = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def numeric_affinity(value: Value) -> Value:
    """Apply NUMERIC affinity: well-formed numeric text becomes INTEGER or REAL; else unchanged."""
    if not isinstance(value, str):
        return value
    match = _NUMBER_TEXT.match(value)
    if match is None:
        return value
    literal = match.group(1)
    if _INTEGER_TEXT.match(literal):
        as_int = int(literal)
        if INT64_MIN <= as_int <= INT64_MAX:
            return as_int
    as_float = float(literal)
    if as_float.is_integer() and INT64_MIN <= as_float <= INT64_MAX:
        return int(as_float)
    return as_float


def to_number(value: Value) -> int | float | None:
    """The number SQLite uses for ``value`` in arithmetic: the longest numeric prefix of text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    match = _NUMBER_PREFIX.match(text)
    if match is None:
        return 0
    converted = numeric_affinity(match.group(0))
    return converted if isinstance(converted, int | float) else 0


def _type_rank(value: Value) -> int:
    # "Datatypes In SQLite" 4.1: NULL < INTEGER/REAL < TEXT < BLOB.
    if value is None:
        return 0
    if isinstance(value, int | float):
        return 1
    if isinstance(value, str):
        return 2
    return 3


def collate_text(text: str, collation: Collation) -> str:
    """The string whose binary order equals ``text``'s order under ``collation``."""
    if collation is Collation.NOCASE:
        # NOCASE folds only the 26 ASCII letters, not Unicode case.
        return text.translate(_ASCII_LOWER)
    if collation is Collation.RTRIM:
        return text.rstrip(" ")
    return text


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def compare(left: Value, right: Value, collation: Collation = Collation.BINARY) -> int:
    """-1, 0 or 1 as SQLite orders ``left`` and ``right`` (NULLs first, equal to each other).

    Python compares int with float exactly, as SQLite does since 3.8 (sqlite3IntFloatCompare),
    and str by code point, which is the byte order of UTF-8: the BINARY collation.
    """
    rank_left, rank_right = _type_rank(left), _type_rank(right)
    if rank_left != rank_right:
        return -1 if rank_left < rank_right else 1
    if left is None:
        return 0
    if isinstance(left, str) and isinstance(right, str):
        a, b = collate_text(left, collation), collate_text(right, collation)
        return (a > b) - (a < b)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return (left > right) - (left < right)
    if isinstance(left, bytes) and isinstance(right, bytes):
        return (left > right) - (left < right)
    raise TypeError(f"cannot compare {left!r} and {right!r}")  # pragma: no cover


def group_key(value: Value, collation: Collation = Collation.BINARY) -> tuple[int, object]:
    """A hashable key that is equal exactly when SQLite's GROUP BY would put values together.

    Python's numeric equality and hashing already agree across int and float (``1 == 1.0``),
    which matches SQLite's comparison of INTEGER with REAL.
    """
    rank = _type_rank(value)
    if isinstance(value, str):
        return (rank, collate_text(value, collation))
    if isinstance(value, float) and math.isnan(value):
        return (0, None)  # SQLite stores NaN as NULL
    return (rank, value)


def truth(value: Value) -> bool | None:
    """SQLite's truth value of ``value`` in WHERE/HAVING/AND/OR: None means NULL (unknown)."""
    number = to_number(value)
    if number is None:
        return None
    return number != 0
