"""The node's state machine: the meta group and the SQL range groups.

``ShardStateMachine`` is what a shardb node hands to ``open_node``: it routes the meta group
(``META_GROUP_ID``) to ``MetaMachine`` and every registered range to ``SqlStateMachine`` (user
tables in one SQLite file per node, one range per group). SQL commands are built with
``encode_write`` / ``encode_ddl`` / ``encode_split`` / ``encode_freeze`` / ``encode_merge``,
reads with ``encode_query``, and every result decodes with ``decode_result``; meta commands
are ``shardb.placement.encode_command``, their results decode with ``decode_meta_result``, the
meta read is ``encode_meta_query``.
"""

from shardb.statemachine.commands import (
    MAX_MERGE_BYTES,
    SEED_INDEX,
    ResultCode,
    decode_result,
    descriptor_from_wire,
    descriptor_to_wire,
    encode_ddl,
    encode_freeze,
    encode_merge,
    encode_query,
    encode_split,
    encode_write,
)
from shardb.statemachine.machine import (
    RESERVED_PREFIX,
    SNAPSHOT_FORMAT,
    GroupRetired,
    RangeOverlap,
    RangeStats,
    SqlStateMachine,
    TableRefused,
)
from shardb.statemachine.metamachine import (
    META_SNAPSHOT_FORMAT,
    MetaMachine,
    decode_meta_answer,
    decode_meta_result,
    encode_meta_query,
    encode_meta_result,
)
from shardb.statemachine.shard import META_FILE, ShardStateMachine

__all__ = [
    "MAX_MERGE_BYTES",
    "META_FILE",
    "META_SNAPSHOT_FORMAT",
    "RESERVED_PREFIX",
    "SEED_INDEX",
    "SNAPSHOT_FORMAT",
    "GroupRetired",
    "MetaMachine",
    "RangeOverlap",
    "RangeStats",
    "ResultCode",
    "ShardStateMachine",
    "SqlStateMachine",
    "TableRefused",
    "decode_meta_answer",
    "decode_meta_result",
    "decode_result",
    "descriptor_from_wire",
    "descriptor_to_wire",
    "encode_ddl",
    "encode_freeze",
    "encode_merge",
    "encode_meta_query",
    "encode_meta_result",
    "encode_query",
    "encode_split",
    "encode_write",
]
