"""The SQL state machine: user tables in one SQLite file per node, one range per group.

``SqlStateMachine`` implements ``consensus.runtime.statemachine.StateMachine``; commands are
built with ``encode_write`` / ``encode_ddl`` / ``encode_split``, reads with ``encode_query``,
and every result decodes with ``decode_result``.
"""

from shardb.statemachine.commands import (
    ResultCode,
    decode_result,
    descriptor_from_wire,
    descriptor_to_wire,
    encode_ddl,
    encode_query,
    encode_split,
    encode_write,
)
from shardb.statemachine.machine import (
    RESERVED_PREFIX,
    SNAPSHOT_FORMAT,
    SqlStateMachine,
    TableRefused,
)

__all__ = [
    "RESERVED_PREFIX",
    "SNAPSHOT_FORMAT",
    "ResultCode",
    "SqlStateMachine",
    "TableRefused",
    "decode_result",
    "descriptor_from_wire",
    "descriptor_to_wire",
    "encode_ddl",
    "encode_query",
    "encode_split",
    "encode_write",
]
