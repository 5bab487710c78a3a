"""shardb's SQLAlchemy 2.x dialect: ``create_engine("shardb://127.0.0.1:7001")``.

Registered under the name ``shardb`` by the ``sqlalchemy.dialects`` entry point; what it
supports and refuses is described in ``shardb.sqlalchemy.dialect``.
"""

from shardb.sqlalchemy.dialect import (
    RollbackWarning,
    ShardbCompiler,
    ShardbConnection,
    ShardbDDLCompiler,
    ShardbDialect,
)

__all__ = [
    "RollbackWarning",
    "ShardbCompiler",
    "ShardbConnection",
    "ShardbDDLCompiler",
    "ShardbDialect",
]
