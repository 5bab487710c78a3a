"""PEP 249 type objects and constructors, kept simple.

shardb's values are SQLite's (NULL, INTEGER, REAL, TEXT, BLOB) and the protocol does not say
which declared type a result column has, so ``Cursor.description`` carries ``None`` as the
type code. The type objects still exist (a PEP 249 module must have them) and compare equal
to the Python types a column of that kind holds. Dates and times travel as ISO-8601 text,
SQLite's own convention: the constructors return ``datetime`` objects, which the driver
binds as such text.
"""

from __future__ import annotations

import datetime
import time
from typing import Final


class DBAPITypeObject:
    """Equal to each of the type codes it stands for (PEP 249, "Type Objects")."""

    def __init__(self, name: str, *values: object) -> None:
        self.name = name
        self.values = values

    def __eq__(self, other: object) -> bool:
        return other in self.values

    def __ne__(self, other: object) -> bool:
        return other not in self.values

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"DBAPITypeObject({self.name})"


STRING: Final = DBAPITypeObject("STRING", str)
BINARY: Final = DBAPITypeObject("BINARY", bytes)
NUMBER: Final = DBAPITypeObject("NUMBER", int, float)
DATETIME: Final = DBAPITypeObject("DATETIME", datetime.datetime, datetime.date, datetime.time)
ROWID: Final = DBAPITypeObject("ROWID", int)

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime


def DateFromTicks(ticks: float) -> datetime.date:
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:
    return Timestamp(*time.localtime(ticks)[:6])


def Binary(data: bytes | bytearray | memoryview) -> bytes:
    return bytes(data)
