"""The gateway's SQL layer: analyze, route, merge. Pure: no IO, no cluster needed.

Typical use by a gateway::

    statement = analyze(sql, catalog)                 # parse + check
    planned = route(statement, params, range_map)     # targets: (range, sql, params)
    rows_per_target = [run(t) for t in planned.targets]
    result = merge_select(planned.select, rows_per_target)   # SELECT
    changed = merge_rowcounts(counts)                         # writes

``EXPLAIN`` is answered by ``explain``; ``SHOW RANGES`` / ``SHOW RANGE`` by ``show_ranges`` /
``show_range_for_row``; ``ALTER TABLE ... SPLIT AT`` gives the keys with ``split_keys``.
"""

from shardb.sql.admin import RANGE_COLUMNS, show_range_for_row, show_ranges, split_keys
from shardb.sql.analyze import (
    CreateIndex,
    CreateTable,
    Delete,
    DropIndex,
    DropTable,
    Explain,
    Insert,
    ParamRef,
    Select,
    ShowRangeForRow,
    ShowRanges,
    SplitAt,
    Statement,
    StatementKind,
    Update,
    analyze,
    analyze_script,
    apply_ddl,
)
from shardb.sql.catalog import Catalog, ColumnSchema, IndexSchema, KeyType, TableSchema
from shardb.sql.errors import (
    MergeError,
    NonDeterministic,
    ParameterError,
    RoutingError,
    SchemaError,
    SqlError,
    SqlSyntaxError,
    UnknownIndex,
    UnknownTable,
    UnsupportedFeature,
    UnsupportedStatement,
)
from shardb.sql.explain import EXPLAIN_COLUMNS, explain
from shardb.sql.lexer import split_statements
from shardb.sql.merge import MergeMode, ResultSet, SelectPlan, merge_rowcounts, merge_select
from shardb.sql.route import Route, RouteKind, Target, normalize_key, route
from shardb.sql.values import Value

__all__ = [
    "EXPLAIN_COLUMNS",
    "RANGE_COLUMNS",
    "Catalog",
    "ColumnSchema",
    "CreateIndex",
    "CreateTable",
    "Delete",
    "DropIndex",
    "DropTable",
    "Explain",
    "IndexSchema",
    "Insert",
    "KeyType",
    "MergeError",
    "MergeMode",
    "NonDeterministic",
    "ParamRef",
    "ParameterError",
    "ResultSet",
    "Route",
    "RouteKind",
    "RoutingError",
    "SchemaError",
    "Select",
    "SelectPlan",
    "ShowRangeForRow",
    "ShowRanges",
    "SplitAt",
    "SqlError",
    "SqlSyntaxError",
    "Statement",
    "StatementKind",
    "TableSchema",
    "Target",
    "UnknownIndex",
    "UnknownTable",
    "UnsupportedFeature",
    "UnsupportedStatement",
    "Update",
    "Value",
    "analyze",
    "analyze_script",
    "apply_ddl",
    "explain",
    "merge_rowcounts",
    "merge_select",
    "normalize_key",
    "route",
    "show_range_for_row",
    "show_ranges",
    "split_keys",
    "split_statements",
]
