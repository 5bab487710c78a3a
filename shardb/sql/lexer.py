"""Token-level helpers on top of sqlglot's SQLite tokenizer.

Parts of shardb's SQL are handled before (or instead of) sqlglot's parser, always on tokens so
that quotes, comments and semicolons inside strings are never miscounted:

- splitting a script into statements;
- the custom statements (``SHOW RANGES``, ``SHOW RANGE ... FOR ROW``, ``ALTER TABLE ... SPLIT
  AT``) and the ``EXPLAIN`` prefix, which sqlglot parses only as opaque commands;
- numbering ``?`` parameters in textual order (SQLite numbers them left to right, whereas a
  walk of sqlglot's tree does not visit nodes in textual order);
- the source text of each result column, which is what SQLite names an unaliased expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.expressions import Expr
from sqlglot.tokenizer_core import Token, TokenType

from shardb.sql.errors import SqlSyntaxError

DIALECT = "sqlite"
_dialect = Dialect.get_or_raise(DIALECT)

PARAM_MARKER_PREFIX = "__shardb_v"
"""Name prefix of the function calls that stand for bound values inside the AST (see analyze)."""


def generate(tree: Expr) -> str:
    """SQLite text of ``tree``, which the generator may modify: pass a private copy."""
    return _dialect.generate(tree, copy=False)


def tokenize(sql: str) -> list[Token]:
    try:
        return list(_dialect.tokenize(sql))
    except SqlglotError as error:
        raise SqlSyntaxError(f"cannot tokenize SQL: {error}") from error


def split_statements(sql: str) -> list[str]:
    """The non-empty statements of a script, each as its exact source text (no semicolon)."""
    statements: list[str] = []
    start: int | None = None
    end = 0
    for token in tokenize(sql):
        if token.token_type is TokenType.SEMICOLON:
            if start is not None:
                statements.append(sql[start : end + 1])
            start = None
            continue
        if start is None:
            start = token.start
        end = token.end
        if token.token_type is TokenType.COMMAND:
            # The tokenizer swallows the rest of a command (EXPLAIN, SHOW) as one string token
            # with unreliable offsets; the command runs to the next semicolon or the end.
            semicolon = sql.find(";", token.end + 1)
            end = (len(sql) if semicolon < 0 else semicolon) - 1
    if start is not None:
        statements.append(sql[start : end + 1])
    return [s.strip() for s in statements if s.strip()]


def upper(token: Token) -> str:
    """Upper-cased token text; fused keywords ("PRIMARY\\nKEY") get single spaces."""
    return " ".join(token.text.upper().split())


def is_name(token: Token) -> bool:
    """An identifier usable as a table or column name (bare or quoted)."""
    return token.token_type in (TokenType.VAR, TokenType.IDENTIFIER) or (
        token.token_type is not TokenType.STRING and token.text.replace("_", "a").isalnum()
    )


def number_parameters(sql: str) -> tuple[str, int]:
    """Replace each ``?`` with a marker call ``__shardb_v<i>()``; return the text and count.

    The markers survive sqlglot's parse and generation unchanged, so any rewritten statement
    can be turned back into ``?`` placeholders with the right values in textual order.
    """
    tokens = tokenize(sql)
    pieces: list[str] = []
    position = 0
    count = 0
    for index, token in enumerate(tokens):
        if token.token_type is TokenType.VAR and token.text.lower().startswith(PARAM_MARKER_PREFIX):
            raise SqlSyntaxError(f"identifiers starting with {PARAM_MARKER_PREFIX} are reserved")
        if token.token_type is not TokenType.PLACEHOLDER:
            continue
        if token.text != "?":
            raise SqlSyntaxError(f"only positional '?' parameters are supported, not {token.text}")
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        adjacent = following is not None and following.start == token.end + 1
        if adjacent and following is not None and following.token_type is TokenType.NUMBER:
            raise SqlSyntaxError("numbered parameters (?NNN) are not supported; use '?'")
        pieces.append(sql[position : token.start])
        pieces.append(f"{PARAM_MARKER_PREFIX}{count}()")
        position = token.end + 1
        count += 1
    pieces.append(sql[position:])
    for token in tokens:
        named = token.token_type in (TokenType.COLON, TokenType.PARAMETER) or (
            token.token_type is TokenType.VAR and token.text[:1] in ("$", "@", ":")
        )
        if named:
            raise SqlSyntaxError("named parameters are not supported; use '?'")
    return "".join(pieces), count


def markers_to_placeholders(sql: str) -> tuple[str, tuple[int, ...]]:
    """Turn marker calls in generated SQL back into ``?``; list their numbers in text order.

    The caller binds ``values[n]`` for each number ``n`` in that order; keeping the order
    separate from the values lets one rendered text serve many ranges with different bounds.
    """
    tokens = tokenize(sql)
    pieces: list[str] = []
    order: list[int] = []
    position = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if (
            token.token_type is TokenType.VAR
            and token.text.lower().startswith(PARAM_MARKER_PREFIX)
            and index + 2 < len(tokens)
            and tokens[index + 1].token_type is TokenType.L_PAREN
            and tokens[index + 2].token_type is TokenType.R_PAREN
        ):
            pieces.append(sql[position : token.start])
            pieces.append("?")
            order.append(int(token.text[len(PARAM_MARKER_PREFIX) :]))
            position = tokens[index + 2].end + 1
            index += 3
            continue
        index += 1
    pieces.append(sql[position:])
    return "".join(pieces), tuple(order)


@dataclass(frozen=True, slots=True)
class Cursor:
    """A read position in a token list, for the small hand-written grammars."""

    tokens: Sequence[Token]
    sql: str

    def at(self, index: int) -> Token | None:
        return self.tokens[index] if index < len(self.tokens) else None

    def word(self, index: int) -> str:
        token = self.at(index)
        return "" if token is None else upper(token)

    def expect(self, index: int, *words: str) -> int:
        """Match ``words`` (upper case, multi-word tokens allowed) from ``index``; return next."""
        for word in words:
            token = self.at(index)
            if token is None:
                raise SqlSyntaxError(f"expected {word} at end of statement")
            # The tokenizer fuses some keyword pairs ("PRIMARY KEY") into one token.
            if upper(token) != word:
                raise SqlSyntaxError(f"expected {word}, found {token.text!r}")
            index += 1
        return index

    def text(self, first: int, last: int) -> str:
        """Source text from token ``first`` through token ``last`` inclusive."""
        return self.sql[self.tokens[first].start : self.tokens[last].end + 1]


def top_level_items(tokens: Sequence[Token], start: int, stop: int) -> list[tuple[int, int]]:
    """Split tokens[start:stop] on commas outside parentheses: inclusive (first, last) pairs."""
    items: list[tuple[int, int]] = []
    depth = 0
    first = start
    for index in range(start, stop):
        kind = tokens[index].token_type
        if kind is TokenType.L_PAREN:
            depth += 1
        elif kind is TokenType.R_PAREN:
            depth -= 1
        elif kind is TokenType.COMMA and depth == 0:
            items.append((first, index - 1))
            first = index + 1
    if first < stop:
        items.append((first, stop - 1))
    return items


def matching_paren(tokens: Sequence[Token], open_index: int) -> int:
    """Index of the parenthesis closing the one at ``open_index``."""
    depth = 0
    for index in range(open_index, len(tokens)):
        kind = tokens[index].token_type
        if kind is TokenType.L_PAREN:
            depth += 1
        elif kind is TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return index
    raise SqlSyntaxError("unbalanced parentheses")


_CLAUSE_WORDS = frozenset({"FROM", "WHERE", "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "WINDOW"})


def select_item_texts(sql: str) -> list[str]:
    """Source text of each result column of the outermost SELECT in ``sql``."""
    tokens = tokenize(sql)
    begin = next(
        (i for i, t in enumerate(tokens) if t.token_type is TokenType.SELECT),
        None,
    )
    if begin is None:
        return []
    start = begin + 1
    if start < len(tokens) and upper(tokens[start]) in ("DISTINCT", "ALL"):
        start += 1
    depth = 0
    stop = len(tokens)
    for index in range(start, len(tokens)):
        kind = tokens[index].token_type
        if kind is TokenType.L_PAREN:
            depth += 1
        elif kind is TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and upper(tokens[index]) in _CLAUSE_WORDS:
            stop = index
            break
    return [
        sql[tokens[a].start : tokens[b].end + 1] for a, b in top_level_items(tokens, start, stop)
    ]
