"""shardb's Python clients over the SQL client protocol.

- ``shardb.client.aio``: the async (trio) client, ``open_connection`` -> ``AsyncConnection``,
  many concurrent statements multiplexed over one connection per gateway.
- ``shardb.client.dbapi``: the PEP 249 driver (``shardb.connect``), blocking sockets, no event
  loop of its own.
- ``shardb.client.errors``: the PEP 249 exception hierarchy both raise, mapped from the
  protocol's error codes.

The async names are imported on first use, so that the DB-API driver (imported by ``import
shardb``) does not pay for the async client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shardb.client.dbapi import Connection, Cursor, connect
from shardb.client.errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)
from shardb.client.wire import Result

if TYPE_CHECKING:
    from shardb.client.aio import AsyncConnection, open_connection

_LAZY = {"AsyncConnection": "shardb.client.aio", "open_connection": "shardb.client.aio"}

__all__ = [
    "AsyncConnection",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Result",
    "Warning",
    "connect",
    "open_connection",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
