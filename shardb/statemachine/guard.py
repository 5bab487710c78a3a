"""What keeps a replicated statement deterministic and inside its group's range.

Three layers, all evaluated the same way on every replica (so a refusal is itself
deterministic and the entry still counts as applied):

1. **Text checks** (``check_write_text``): cheap, on the statement text with string literals
   and comments blanked out. Refuses the non-deterministic functions ``random()``,
   ``randomblob()``, ``changes()``, ``total_changes()``, ``last_insert_rowid()``, date/time
   functions fed ``'now'`` (as text or as a bound parameter), and subqueries: a subquery over
   the shared physical table would see the rows of other groups hosted on this node, which
   differ from replica to replica. Over-refusal is safe (the gateway already rejects all of
   these; this is defence in depth).
2. **The SQLite authorizer** (``WritePolicy`` / ``ReadPolicy``): consulted while a user
   statement is prepared. A write may only INSERT/UPDATE/DELETE the group's own table and read
   only that table; no DDL, PRAGMA, ATTACH, transaction control or banned function, whatever
   the spelling (quoted names included). A query may only SELECT and read the group's table.
3. **Temporary triggers** (``guard_triggers``): every user table gets connection-local TEMP
   triggers that compare each row's primary key with the bounds of the group currently
   applying (a row of ``temp.shardb_bounds``). They live in the temp schema, never in the
   database file, so they are not replicated state.

   - INSERT: an AFTER trigger refuses a stored key outside the range (the stored value, after
     type affinity). A NULL key, or an INTEGER key SQLite would assign itself, is refused:
     the assigned rowid is max(rowid)+1 over the whole physical table, which depends on the
     other groups hosted on the node. SQLite shows an auto-assigned key as -1 in BEFORE
     INSERT triggers, so a BEFORE trigger notes a -1 and the AFTER trigger refuses the row
     when the stored key is not -1.
   - UPDATE: a row whose new key leaves the range is refused (ABORT).
   - UPDATE/DELETE of a row whose current key is outside the range is skipped (``RAISE
     (IGNORE)``), not refused: whether such a row exists on a node depends on which other
     groups it hosts, so refusing would make the result differ between replicas. Skipping
     gives every replica the same effect: the statement confined to the range.

We chose triggers over ``RETURNING pk`` or counting rows in range because they see every row
SQLite actually writes (including upserts and ``REPLACE``), cost one indexed lookup per row,
and need no rewriting of the user's SQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import apsw

from shardb.statemachine.commands import Value

BOUNDS_TABLE: Final = "shardb_bounds"
AUTOKEY_TABLE: Final = "shardb_autokey"
TRIGGER_PREFIX: Final = "shardb_guard_"
OUT_OF_RANGE_MESSAGE: Final = "shardb: row outside the range of the group"
AUTOKEY_MESSAGE: Final = "shardb: the primary key must be given, not assigned by SQLite"

TEMP_SCHEMA: Final = (
    f"""CREATE TEMP TABLE IF NOT EXISTS {BOUNDS_TABLE}(
        tbl TEXT PRIMARY KEY, lo ANY, hi ANY) STRICT""",
    f"CREATE TEMP TABLE IF NOT EXISTS {AUTOKEY_TABLE}(pending INTEGER)",
)

BANNED_FUNCTIONS: Final = frozenset(
    {"random", "randomblob", "changes", "total_changes", "last_insert_rowid"}
)
TIME_FUNCTIONS: Final = frozenset(
    {"date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff"}
)
CLOCK_WORDS: Final = frozenset({"now", "localtime", "utc"})

# String literals and comments are blanked before keyword checks: 'select' in a value is data.
_LITERALS = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)
_WORD_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_SELECT = re.compile(r"\bselect\b", re.IGNORECASE)
_CLOCK_LITERAL = re.compile(r"'\s*(now|localtime|utc)\s*'", re.IGNORECASE)


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def check_write_text(sql: str, params: Sequence[Value]) -> str | None:
    """Why ``sql`` may not be replicated, or None. Deterministic: a function of the text."""
    code = _LITERALS.sub(" ", sql)
    called = {name.lower() for name in _WORD_CALL.findall(code)}
    banned = sorted(called & BANNED_FUNCTIONS)
    if banned:
        return f"{banned[0]}() gives a different value on each replica"
    clock = _CLOCK_LITERAL.search(sql) is not None or any(
        isinstance(p, str) and p.strip().lower() in CLOCK_WORDS for p in params
    )
    if called & TIME_FUNCTIONS and clock:
        return "date and time functions of 'now', 'localtime' or 'utc' differ per replica"
    if _SELECT.search(code):
        return "subqueries are not allowed in replicated writes: they would read other ranges"
    return None


def guard_triggers(table: str, key_column: str) -> tuple[str, ...]:
    """The TEMP triggers that confine writes to ``table`` to the current group's range."""
    t, k = quote_name(table), quote_name(key_column)
    folded = quote_literal(table.lower())
    name = table.lower().replace('"', "")

    def outside(row: str) -> str:
        return (
            f"NOT EXISTS (SELECT 1 FROM temp.{BOUNDS_TABLE} b WHERE b.tbl = {folded}"
            f" AND (b.lo IS NULL OR {row}.{k} >= b.lo) AND (b.hi IS NULL OR {row}.{k} < b.hi))"
        )

    def trigger(suffix: str) -> str:
        return quote_name(f"{TRIGGER_PREFIX}{suffix}_{name}")

    return (
        f"""CREATE TEMP TRIGGER {trigger("bi")} BEFORE INSERT ON main.{t}
            WHEN NEW.{k} IS NULL OR NEW.{k} = -1 BEGIN
              SELECT RAISE(ABORT, {quote_literal(AUTOKEY_MESSAGE)}) WHERE NEW.{k} IS NULL;
              INSERT INTO {AUTOKEY_TABLE}(pending) VALUES (1);
            END""",
        f"""CREATE TEMP TRIGGER {trigger("ai_auto")} AFTER INSERT ON main.{t}
            WHEN EXISTS (SELECT 1 FROM temp.{AUTOKEY_TABLE}) BEGIN
              DELETE FROM {AUTOKEY_TABLE};
              SELECT RAISE(ABORT, {quote_literal(AUTOKEY_MESSAGE)}) WHERE NEW.{k} IS NOT -1;
            END""",
        f"""CREATE TEMP TRIGGER {trigger("ai")} AFTER INSERT ON main.{t}
            WHEN {outside("NEW")} BEGIN
              SELECT RAISE(ABORT, {quote_literal(OUT_OF_RANGE_MESSAGE)});
            END""",
        f"""CREATE TEMP TRIGGER {trigger("bu")} BEFORE UPDATE ON main.{t}
            WHEN {outside("OLD")} BEGIN SELECT RAISE(IGNORE); END""",
        f"""CREATE TEMP TRIGGER {trigger("au")} AFTER UPDATE OF {k} ON main.{t}
            WHEN {outside("NEW")} BEGIN
              SELECT RAISE(ABORT, {quote_literal(OUT_OF_RANGE_MESSAGE)});
            END""",
        f"""CREATE TEMP TRIGGER {trigger("bd")} BEFORE DELETE ON main.{t}
            WHEN {outside("OLD")} BEGIN SELECT RAISE(IGNORE); END""",
    )


def trigger_name_of(table: str) -> str:
    """The name of one guard trigger of ``table`` (to tell whether the guard is installed)."""
    return f"{TRIGGER_PREFIX}ai_{table.lower()}"


_WRITE_ACTIONS: Final = {
    apsw.SQLITE_INSERT: "insert",
    apsw.SQLITE_UPDATE: "update",
    apsw.SQLITE_DELETE: "delete",
}


class _Policy:
    """An authorizer: records the first reason it denied something."""

    def __init__(self, table: str) -> None:
        self.table = table.lower()
        self.denied: str | None = None

    def _deny(self, reason: str) -> int:
        if self.denied is None:
            self.denied = reason
        return apsw.SQLITE_DENY

    def _ours(self, trigger: str | None) -> bool:
        return trigger is not None and trigger.lower().startswith(TRIGGER_PREFIX)

    def _own_table(self, name: str | None, database: str | None) -> bool:
        # SQLite reports no database for some reads (e.g. a rowid lookup).
        return name is not None and name.lower() == self.table and database in ("main", None)

    def __call__(
        self,
        action: int,
        first: str | None,
        second: str | None,
        database: str | None,
        trigger: str | None,
    ) -> int:
        return self._deny("no statement is allowed")


class WritePolicy(_Policy):
    """INSERT/UPDATE/DELETE of the group's table only."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.actions: set[str] = set()

    def __call__(
        self,
        action: int,
        first: str | None,
        second: str | None,
        database: str | None,
        trigger: str | None,
    ) -> int:
        if self._ours(trigger):
            return apsw.SQLITE_OK  # our guard triggers touch only temp.shardb_* tables
        if action in _WRITE_ACTIONS:
            if not self._own_table(first, database):
                return self._deny(f"a write may only change table {self.table}, not {first}")
            self.actions.add(_WRITE_ACTIONS[action])
            return apsw.SQLITE_OK
        if action == apsw.SQLITE_READ:
            if not self._own_table(first, database):
                return self._deny(f"a write may only read table {self.table}, not {first}")
            return apsw.SQLITE_OK
        if action == apsw.SQLITE_SELECT:
            return apsw.SQLITE_OK  # multi-row VALUES; real subqueries are refused by text
        if action == apsw.SQLITE_FUNCTION:
            if second is not None and second.lower() in BANNED_FUNCTIONS:
                return self._deny(f"{second}() gives a different value on each replica")
            return apsw.SQLITE_OK
        return self._deny(f"{_action_name(action)} is not allowed in a replicated write")


class ReadPolicy(_Policy):
    """SELECT reading the group's table only."""

    def __call__(
        self,
        action: int,
        first: str | None,
        second: str | None,
        database: str | None,
        trigger: str | None,
    ) -> int:
        if action in (apsw.SQLITE_SELECT, apsw.SQLITE_FUNCTION):
            return apsw.SQLITE_OK
        if action == apsw.SQLITE_READ:
            if not self._own_table(first, database):
                return self._deny(f"a query may only read table {self.table}, not {first}")
            return apsw.SQLITE_OK
        return self._deny(f"{_action_name(action)} is not allowed in a query")


class DdlPolicy(_Policy):
    """One kind of DDL (``action``: CREATE TABLE, CREATE INDEX or DROP INDEX) on the group's
    table, plus the schema-table bookkeeping SQLite does for it."""

    def __init__(self, table: str, action: int) -> None:
        super().__init__(table)
        self.action = action

    def __call__(
        self,
        action: int,
        first: str | None,
        second: str | None,
        database: str | None,
        trigger: str | None,
    ) -> int:
        schema_table = first is not None and first.lower() in ("sqlite_master", "sqlite_schema")
        if action in (*_WRITE_ACTIONS, apsw.SQLITE_READ) and schema_table:
            return apsw.SQLITE_OK
        if action in (apsw.SQLITE_READ, apsw.SQLITE_REINDEX) and (
            self._own_table(first, database) or action == apsw.SQLITE_REINDEX
        ):
            return apsw.SQLITE_OK
        if action == apsw.SQLITE_FUNCTION:
            if second is not None and second.lower() in BANNED_FUNCTIONS:
                return self._deny(f"{second}() gives a different value on each replica")
            return apsw.SQLITE_OK
        if (
            self.action == apsw.SQLITE_CREATE_TABLE
            and action == apsw.SQLITE_CREATE_INDEX
            and (first or "").startswith("sqlite_autoindex_")
            and self._own_table(second, database)
        ):
            return apsw.SQLITE_OK  # the index behind a TEXT PRIMARY KEY
        # CREATE TABLE names the table first; index actions name the index, then the table.
        target = first if action == apsw.SQLITE_CREATE_TABLE else second
        if action == self.action and self._own_table(target, database):
            return apsw.SQLITE_OK
        return self._deny(f"{_action_name(action)} is not allowed here")


def _action_name(action: int) -> str:
    name = apsw.mapping_authorizer_function.get(action, str(action))
    return str(name).removeprefix("SQLITE_").replace("_", " ")


__all__ = [
    "AUTOKEY_MESSAGE",
    "BANNED_FUNCTIONS",
    "OUT_OF_RANGE_MESSAGE",
    "TEMP_SCHEMA",
    "DdlPolicy",
    "ReadPolicy",
    "WritePolicy",
    "check_write_text",
    "guard_triggers",
    "quote_literal",
    "quote_name",
    "trigger_name_of",
]
