"""Evaluate the expressions that only the gateway can compute, with SQLite's semantics.

After per-range partial aggregates are merged, the gateway computes what is left of the query:
the result columns built from aggregates and group keys (``SUM(v) * 2``), HAVING, and ORDER BY
terms that are not result columns. Expressions are compiled once per query into closures over
an environment that maps canonical SQL of group keys and aggregate calls to their values.

Only what appears in such expressions is supported: literals, parameters, arithmetic, unary
minus, comparisons, AND/OR/NOT, IS [NOT] NULL, IS, BETWEEN, IN (list), COLLATE and
parentheses. Anything else is refused when the query is planned (``UnsupportedFeature``), never
half-evaluated. Semantics follow "Datatypes In SQLite" 4.2-4.3 (affinity before comparison),
section 7 (collating sequences) and the expression documentation (NULL propagation,
integer division truncating toward zero, division by zero giving NULL, integer overflow in
``+ - *`` turning the result into REAL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sqlglot import exp

from shardb.sql.analyze import marker_index
from shardb.sql.catalog import TableSchema
from shardb.sql.errors import UnsupportedFeature
from shardb.sql.lexer import DIALECT
from shardb.sql.values import (
    INT64_MAX,
    INT64_MIN,
    Affinity,
    Collation,
    Value,
    affinity_of,
    collation_named,
    compare,
    numeric_affinity,
    to_number,
    truth,
)

Env = Mapping[str, Value]
Compiled = Callable[[Env], Value]


def canonical(node: exp.Expr) -> str:
    """A key that is equal for expressions SQLite would treat as the same expression.

    Identifiers are case-insensitive in SQLite, quoted or not; string literals are not.
    Parentheses are dropped: the key spells out the tree's structure, which already encodes
    grouping (SQL text without the parentheses would be ambiguous).
    """
    node = strip_parens(node)
    if isinstance(node, exp.Identifier):
        return str(node.this).lower()
    parts = [type(node).__name__]
    for name, value in node.args.items():
        if value is None or value is False or value == []:
            continue
        if isinstance(value, exp.Expr):
            parts.append(f"{name}={canonical(value)}")
        elif isinstance(value, list):
            items = ",".join(canonical(v) if isinstance(v, exp.Expr) else repr(v) for v in value)
            parts.append(f"{name}=[{items}]")
        else:
            parts.append(f"{name}={value!r}")
    return "(" + " ".join(parts) + ")"


def strip_parens(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def explicit_collation(node: exp.Expr) -> Collation | None:
    """The collation of a COLLATE operator in ``node``, searching left operands first.

    Mirrors sqlite3ExprCollSeq: an explicit COLLATE anywhere in an operand wins.
    """
    node = strip_parens(node)
    if isinstance(node, exp.Collate):
        named = collation_named(_collation_name(node))
        if named is None:
            raise UnsupportedFeature("COLLATE", f"unknown collation {_collation_name(node)}")
        return named
    for child in node.iter_expressions():
        if isinstance(child, exp.Query):
            continue
        found = explicit_collation(child)
        if found is not None:
            return found
    return None


def _collation_name(node: exp.Collate) -> str:
    target = node.expression
    return (
        target.name if isinstance(target, exp.Column | exp.Var | exp.Identifier) else target.sql()
    )


def expression_collation(node: exp.Expr, table: TableSchema) -> Collation:
    """The collation SQLite uses to sort or group by ``node`` (sqlite3ExprCollSeq)."""
    found = explicit_collation(node)
    if found is not None:
        return found
    inner = strip_parens(node)
    while isinstance(inner, exp.Cast):
        inner = strip_parens(inner.this)
    if isinstance(inner, exp.Column):
        column = table.column(inner.name)
        if column is not None:
            return column.collation
    return Collation.BINARY


def comparison_collation(left: exp.Expr, right: exp.Expr, table: TableSchema) -> Collation:
    """Collation of a binary comparison: explicit COLLATE first, then a column, left first."""
    for side in (left, right):
        found = explicit_collation(side)
        if found is not None:
            return found
    for side in (left, right):
        inner = strip_parens(side)
        if isinstance(inner, exp.Column):
            column = table.column(inner.name)
            if column is not None:
                return column.collation
    return Collation.BINARY


def expression_affinity(node: exp.Expr, table: TableSchema) -> Affinity | None:
    """The affinity of ``node`` for comparisons; None for "no affinity"."""
    node = strip_parens(node)
    if isinstance(node, exp.Collate):
        return expression_affinity(node.this, table)
    if isinstance(node, exp.Column):
        column = table.column(node.name)
        return None if column is None else column.affinity
    if isinstance(node, exp.Cast):
        return affinity_of(node.to.sql(dialect=DIALECT))
    return None


def _to_text(value: Value) -> Value:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # SQLite renders REAL as "%!.15g"; shardb only meets this in TEXT-affinity comparisons.
        text = f"{value:.15g}"
        if "." not in text and "e" not in text and "n" not in text:
            text += ".0"
        return text
    return value


_NUMERIC = (Affinity.INTEGER, Affinity.REAL, Affinity.NUMERIC)


def apply_comparison_affinity(
    left: Value, right: Value, left_affinity: Affinity | None, right_affinity: Affinity | None
) -> tuple[Value, Value]:
    """ "Datatypes In SQLite" 4.2: convert operands before a comparison."""
    left_text_like = left_affinity in (Affinity.TEXT, Affinity.BLOB, None)
    right_text_like = right_affinity in (Affinity.TEXT, Affinity.BLOB, None)
    if left_affinity in _NUMERIC and right_text_like:
        return left, numeric_affinity(right)
    if right_affinity in _NUMERIC and left_text_like:
        return numeric_affinity(left), right
    if left_affinity is Affinity.TEXT and right_affinity in (None, Affinity.BLOB):
        return left, _to_text(right)
    if right_affinity is Affinity.TEXT and left_affinity in (None, Affinity.BLOB):
        return _to_text(left), right
    return left, right


def _int_or_real(result: int) -> int | float:
    return result if INT64_MIN <= result <= INT64_MAX else float(result)


def _arith(op: str, a: Value, b: Value) -> Value:
    x, y = to_number(a), to_number(b)
    if x is None or y is None:
        return None
    if isinstance(x, int) and isinstance(y, int):
        if op == "+":
            return _int_or_real(x + y)
        if op == "-":
            return _int_or_real(x - y)
        if op == "*":
            return _int_or_real(x * y)
        if y == 0:
            return None
        if op == "/":
            quotient = abs(x) // abs(y)
            return _int_or_real(quotient if (x < 0) == (y < 0) else -quotient)
        remainder = abs(x) % abs(y)
        return -remainder if x < 0 else remainder
    if op == "%":
        # SQLite computes % on REAL operands after casting them to INTEGER.
        ix, iy = int(x), int(y)
        if iy == 0:
            return None
        remainder = abs(ix) % abs(iy)
        return float(-remainder if ix < 0 else remainder)
    fx, fy = float(x), float(y)
    if op == "+":
        return fx + fy
    if op == "-":
        return fx - fy
    if op == "*":
        return fx * fy
    if fy == 0.0:
        return None
    return fx / fy


_COMPARISONS: dict[type[exp.Expr], Callable[[int], bool]] = {
    exp.EQ: lambda c: c == 0,
    exp.NEQ: lambda c: c != 0,
    exp.GT: lambda c: c > 0,
    exp.GTE: lambda c: c >= 0,
    exp.LT: lambda c: c < 0,
    exp.LTE: lambda c: c <= 0,
}
_ARITHMETIC: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
}


def _bool(value: bool | None) -> Value:
    return None if value is None else int(value)


class Compiler:
    """Compiles expressions over an environment of precomputed sub-expressions."""

    def __init__(self, table: TableSchema, known: Sequence[str], params: Sequence[Value]) -> None:
        self._table = table
        self._known = frozenset(known)
        self._params = params

    def compile(self, node: exp.Expr) -> Compiled:
        key = canonical(node)
        if key in self._known:
            return lambda env: env[key]
        match node:
            case exp.Paren() | exp.Collate():
                return self.compile(node.this)
            case exp.Literal():
                literal: Value = (
                    str(node.this) if node.is_string else numeric_affinity(str(node.this))
                )
                return lambda env: literal
            case exp.Null():
                return lambda env: None
            case exp.Boolean():
                constant = int(bool(node.this))
                return lambda env: constant
            case exp.Neg():
                inner = self.compile(node.this)
                return lambda env: _arith("-", 0, inner(env))
            case exp.Not():
                operand = self.compile(node.this)

                def negate(env: Env) -> Value:
                    value = truth(operand(env))
                    return None if value is None else int(not value)

                return negate
            case exp.And() | exp.Or():
                return self._logic(node)
            case exp.Is() | exp.NullSafeEQ() | exp.NullSafeNEQ():
                return self._is(node)
            case exp.Between():
                return self._between(node)
            case exp.In():
                return self._in(node)
            case exp.Anonymous():
                marker = marker_index(node)
                if marker is not None:
                    bound = self._params[marker]
                    return lambda env: bound
        if type(node) in _ARITHMETIC:
            op = _ARITHMETIC[type(node)]
            left, right = self.compile(node.this), self.compile(node.expression)
            return lambda env: _arith(op, left(env), right(env))
        if type(node) in _COMPARISONS:
            return self._comparison(node, _COMPARISONS[type(node)])
        if isinstance(node, exp.Column):
            raise UnsupportedFeature(
                "bare column",
                f"column {node.sql(dialect=DIALECT)} must appear in GROUP BY or inside an "
                "aggregate (SQLite's bare columns cannot be merged across ranges)",
            )
        raise UnsupportedFeature(
            "expression",
            f"{node.sql(dialect=DIALECT)} cannot be computed after merging ranges; only "
            "arithmetic, comparisons and logic over aggregates and GROUP BY keys can",
        )

    def _compare_fn(self, left_node: exp.Expr, right_node: exp.Expr) -> Callable[[Env], int | None]:
        left, right = self.compile(left_node), self.compile(right_node)
        left_affinity = expression_affinity(left_node, self._table)
        right_affinity = expression_affinity(right_node, self._table)
        collation = comparison_collation(left_node, right_node, self._table)

        def compare_values(env: Env) -> int | None:
            a, b = left(env), right(env)
            if a is None or b is None:
                return None
            a, b = apply_comparison_affinity(a, b, left_affinity, right_affinity)
            return compare(a, b, collation)

        return compare_values

    def _comparison(self, node: exp.Expr, test: Callable[[int], bool]) -> Compiled:
        compare_values = self._compare_fn(node.this, node.expression)

        def evaluate(env: Env) -> Value:
            result = compare_values(env)
            return None if result is None else int(test(result))

        return evaluate

    def _logic(self, node: exp.And | exp.Or) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        is_and = isinstance(node, exp.And)

        def evaluate(env: Env) -> Value:
            a, b = truth(left(env)), truth(right(env))
            if is_and:
                if a is False or b is False:
                    return 0
                return None if a is None or b is None else 1
            if a is True or b is True:
                return 1
            return None if a is None or b is None else 0

        return evaluate

    def _is(self, node: exp.Expr) -> Compiled:
        left, right = self.compile(node.this), self.compile(node.expression)
        equal_when = not isinstance(node, exp.NullSafeNEQ)
        collation = comparison_collation(node.this, node.expression, self._table)
        left_affinity = expression_affinity(node.this, self._table)
        right_affinity = expression_affinity(node.expression, self._table)

        def evaluate(env: Env) -> Value:
            a, b = left(env), right(env)
            if a is None or b is None:
                return int((a is None and b is None) == equal_when)
            a, b = apply_comparison_affinity(a, b, left_affinity, right_affinity)
            return int((compare(a, b, collation) == 0) == equal_when)

        return evaluate

    def _between(self, node: exp.Between) -> Compiled:
        low = self._compare_fn(node.this, node.args["low"])
        high = self._compare_fn(node.this, node.args["high"])

        def evaluate(env: Env) -> Value:
            above, below = low(env), high(env)
            first = None if above is None else above >= 0
            second = None if below is None else below <= 0
            if first is False or second is False:
                return 0
            return None if first is None or second is None else 1

        return evaluate

    def _in(self, node: exp.In) -> Compiled:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise UnsupportedFeature("IN", "IN (subquery) is not supported")
        tests = [self._compare_fn(node.this, item) for item in node.expressions]

        def evaluate(env: Env) -> Value:
            unknown = False
            for test in tests:
                result = test(env)
                if result == 0:
                    return 1
                unknown = unknown or result is None
            return None if unknown else 0

        return evaluate
