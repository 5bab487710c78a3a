"""The errors the SQL layer raises: one base class whose message is fit to show a user.

Every error here is raised *before* anything is sent to a shard (analysis and planning) or
while merging shard results; none of them means a shard is unhealthy. Errors that SQLite itself
raises on a shard (constraint violations, type mismatches) are not translated here: they are
deterministic, the same on every replica, and the server returns them as they are.
"""

from __future__ import annotations


class SqlError(Exception):
    """Base class; ``message`` is the user-facing text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SqlSyntaxError(SqlError):
    """The text is not SQL we can parse (sqlglot or our own small grammar refused it)."""


class UnsupportedStatement(SqlError):
    """A statement kind outside the whitelist (``kind`` names it, e.g. ``"PRAGMA"``)."""

    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message or f"{kind} statements are not supported by shardb")
        self.kind = kind


class UnsupportedFeature(SqlError):
    """A whitelisted statement uses a clause we cannot run across ranges (joins, subqueries)."""

    def __init__(self, feature: str, message: str) -> None:
        super().__init__(message)
        self.feature = feature


class NonDeterministic(SqlError):
    """A write (or a table definition) uses a function whose value differs between replicas."""

    def __init__(self, function: str, why: str) -> None:
        super().__init__(
            f"{function} is not deterministic ({why}); replicas would diverge, so it is "
            "refused in writes and table definitions: compute the value in the client and "
            "pass it as a parameter"
        )
        self.function = function


class UnknownTable(SqlError):
    def __init__(self, table: str) -> None:
        super().__init__(f"no such table: {table}")
        self.table = table


class UnknownIndex(SqlError):
    def __init__(self, index: str) -> None:
        super().__init__(f"no such index: {index}")
        self.index = index


class SchemaError(SqlError):
    """A table or index definition shardb cannot shard (composite key, UNIQUE, ...)."""


class RoutingError(SqlError):
    """A write cannot be confined to ranges (missing primary key, primary-key update, ...)."""


class ParameterError(SqlError):
    """The bound parameters do not fit the statement (count or type)."""


class MergeError(SqlError):
    """Shard results cannot be combined (integer overflow in SUM, wrong result shape)."""
