"""Dot-commands (``.tables``) and their psql backslash aliases (``\\d``), parsed into values.

Parsing is pure: :func:`parse_command` turns one line into a frozen dataclass or raises
:class:`CommandError` with the usage line; the executor decides what each one does. Arguments
are whitespace-separated; quote them (``'...'`` or ``"..."``) to keep spaces. A key written in
quotes is text, a bare integer is an integer, any other bare word is text.

A missing ``on|off`` toggles, as psql's ``\\timing`` and ``\\x`` do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from consensus.types import GroupId, NodeId
from shardb.shell.format import OutputMode
from shardb.shell.session import (
    CONSISTENCY_LEVELS,
    Crash,
    FaultCommand,
    Heal,
    Isolate,
    Partition,
    Restart,
    Skew,
    Slow,
)

# Bounds on fault parameters: a typo (50s for 50ms) should be refused, not stall a cluster.
MAX_SLOW_MS = 60_000
MAX_SKEW_MS = 3_600_000

Key = int | str


class CommandError(Exception):
    """A dot-command the shell cannot run as written; ``message`` says why and how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Help:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Tables:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Schema:
    table: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Indexes:
    table: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mode:
    """Set the output mode; None shows the current one."""

    mode: OutputMode | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expanded:
    """psql's ``\\x``: vertical records on, off, automatic for wide rows, or toggled (None)."""

    setting: Literal["on", "off", "auto"] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Headers:
    on: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Timer:
    on: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    on: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Output:
    """Send results to ``path``; None sends them back to standard output."""

    path: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Nodes:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Groups:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Ranges:
    table: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Leader:
    table: str
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class Consistency:
    """Set the read consistency; None shows the current one."""

    level: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    table: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    group: GroupId
    node: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    command: FaultCommand


Command = (
    Help
    | Quit
    | Tables
    | Schema
    | Indexes
    | Mode
    | Expanded
    | Headers
    | Timer
    | Trace
    | Read
    | Output
    | Nodes
    | Groups
    | Ranges
    | Leader
    | Consistency
    | Backend
    | Split
    | Transfer
    | Fault
)


# --- argument readers -----------------------------------------------------------------------

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\S+")
_NODE = re.compile(r"n?(\d+)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_DURATION = re.compile(r"([+-]?)(\d+)(ms|s)?", re.IGNORECASE)


def _tokens(text: str) -> list[str]:
    tokens = _TOKEN.findall(text)
    for token in tokens:
        if token[0] in "'\"" and (len(token) < 2 or token[-1] != token[0]):
            raise CommandError(f"unterminated quote in {token!r}")
    return tokens


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] in "'\"" and token[-1] == token[0]:
        quote = token[0]
        return token[1:-1].replace(quote * 2, quote)
    return token


def _key(token: str) -> Key:
    if token[0] in "'\"":
        return _unquote(token)
    return int(token) if _INTEGER.fullmatch(token) else token


def _node(token: str, usage: str) -> NodeId:
    match = _NODE.fullmatch(token)
    if match is None:
        raise CommandError(f"{token!r} is not a node (write n3 or 3); usage: {usage}")
    return NodeId(int(match.group(1)))


def _switch(args: Sequence[str], usage: str) -> bool | None:
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in ("on", "off"):
        return args[0].lower() == "on"
    raise CommandError(f"expected on or off; usage: {usage}")


def _duration_ms(token: str, usage: str, *, signed: bool) -> int:
    match = _DURATION.fullmatch(token)
    if match is None or (match.group(1) and not signed and match.group(1) == "-"):
        raise CommandError(f"{token!r} is not a duration like 50ms or 2s; usage: {usage}")
    sign, digits, unit = match.groups()
    value = int(digits) * (1000 if (unit or "ms").lower() == "s" else 1)
    return -value if sign == "-" else value


def _count(args: Sequence[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise CommandError(f"usage: {usage}")


# --- one parser per command -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    """One dot-command: its usage line, what it does, and its psql aliases."""

    name: str
    usage: str
    summary: str
    parse: Callable[[list[str]], Command]
    aliases: tuple[str, ...] = ()


def _no_args(value: Command, usage: str) -> Callable[[list[str]], Command]:
    def parse(args: list[str]) -> Command:
        _count(args, 0, 0, usage)
        return value

    return parse


def _optional_table(make: Callable[[str | None], Command], usage: str) -> Callable[..., Command]:
    def parse(args: list[str]) -> Command:
        _count(args, 0, 1, usage)
        return make(_unquote(args[0]) if args else None)

    return parse


def _parse_mode(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".mode"].usage
    _count(args, 0, 1, usage)
    if not args:
        return Mode(mode=None)
    try:
        return Mode(mode=OutputMode(args[0].lower()))
    except ValueError:
        names = "|".join(m.value for m in OutputMode)
        raise CommandError(f"unknown mode {args[0]!r}; usage: .mode [{names}]") from None


def _parse_expanded(args: list[str]) -> Command:
    usage = "\\x [on|off|auto]"
    _count(args, 0, 1, usage)
    if not args:
        return Expanded(setting=None)
    setting = args[0].lower()
    if setting == "on":
        return Expanded(setting="on")
    if setting == "off":
        return Expanded(setting="off")
    if setting == "auto":
        return Expanded(setting="auto")
    raise CommandError(f"expected on, off or auto; usage: {usage}")


def _parse_path(make: Callable[[str], Command], usage: str) -> Callable[[list[str]], Command]:
    def parse(args: list[str]) -> Command:
        _count(args, 1, 1, usage)
        return make(_unquote(args[0]))

    return parse


def _parse_output(args: list[str]) -> Command:
    _count(args, 0, 1, SPECS_BY_NAME[".output"].usage)
    return Output(path=_unquote(args[0]) if args else None)


def _parse_leader(args: list[str]) -> Command:
    _count(args, 2, 2, SPECS_BY_NAME[".leader"].usage)
    return Leader(table=_unquote(args[0]), key=_key(args[1]))


def _parse_consistency(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".consistency"].usage
    _count(args, 0, 1, usage)
    if not args:
        return Consistency(level=None)
    level = args[0].lower()
    if level not in CONSISTENCY_LEVELS:
        raise CommandError(f"unknown consistency level {args[0]!r}; usage: {usage}")
    return Consistency(level=level)


def _parse_split(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".split"].usage
    if len(args) < 3 or args[1].upper() != "AT":
        raise CommandError(f"usage: {usage}")
    return Split(table=_unquote(args[0]), keys=tuple(_key(token) for token in args[2:]))


def _parse_transfer(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".transfer"].usage
    _count(args, 2, 2, usage)
    if not args[0].isdigit():
        raise CommandError(f"{args[0]!r} is not a group id; usage: {usage}")
    return Transfer(group=GroupId(int(args[0])), node=_node(args[1], usage))


def _parse_switch(make: Callable[[bool | None], Command], usage: str) -> Callable[..., Command]:
    def parse(args: list[str]) -> Command:
        return make(_switch(args, usage))

    return parse


def _parse_tuples_only(args: list[str]) -> Command:
    # psql's \t is "tuples only": on means headers (and footers) off.
    on = _switch(args, "\\t [on|off]")
    return Headers(on=None if on is None else not on)


def _parse_describe(args: list[str]) -> Command:
    # psql's \d lists relations; \d NAME describes one.
    _count(args, 0, 1, "\\d [TABLE]")
    return Schema(table=_unquote(args[0])) if args else Tables()


def _parse_partition(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".partition"].usage
    sides: list[tuple[NodeId, ...]] = []
    for side_text in " ".join(args).split("|"):
        nodes = tuple(_node(token, usage) for token in side_text.split())
        if not nodes:
            raise CommandError(f"each side of a partition needs a node; usage: {usage}")
        sides.append(nodes)
    if len(sides) < 2:
        raise CommandError(f"a partition needs at least two sides; usage: {usage}")
    flat = [node for side in sides for node in side]
    if len(set(flat)) != len(flat):
        raise CommandError(f"a node may be on one side only; usage: {usage}")
    return Fault(command=Partition(sides=tuple(sides)))


def _parse_one_node(make: Callable[[NodeId], FaultCommand], usage: str) -> Callable[..., Command]:
    def parse(args: list[str]) -> Command:
        _count(args, 1, 1, usage)
        return Fault(command=make(_node(args[0], usage)))

    return parse


def _parse_slow(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".slow"].usage
    _count(args, 2, 2, usage)
    delay_ms = _duration_ms(args[1], usage, signed=False)
    if delay_ms > MAX_SLOW_MS:
        raise CommandError(f"a delay above {MAX_SLOW_MS} ms is refused; usage: {usage}")
    return Fault(command=Slow(node=_node(args[0], usage), delay_ms=delay_ms))


def _parse_skew(args: list[str]) -> Command:
    usage = SPECS_BY_NAME[".skew"].usage
    _count(args, 2, 2, usage)
    offset_ms = _duration_ms(args[1], usage, signed=True)
    if abs(offset_ms) > MAX_SKEW_MS:
        raise CommandError(f"a skew beyond ±{MAX_SKEW_MS} ms is refused; usage: {usage}")
    return Fault(command=Skew(node=_node(args[0], usage), offset_ms=offset_ms))


SPECS: tuple[CommandSpec, ...] = (
    CommandSpec(
        name=".help",
        usage=".help",
        summary="list these commands",
        parse=_no_args(Help(), ".help"),
        aliases=("\\?",),
    ),
    CommandSpec(
        name=".quit",
        usage=".quit",
        summary="leave the shell",
        parse=_no_args(Quit(), ".quit"),
        aliases=(".exit", "\\q"),
    ),
    CommandSpec(
        name=".tables",
        usage=".tables",
        summary="list tables with their primary key and backend",
        parse=_no_args(Tables(), ".tables"),
        aliases=("\\dt",),
    ),
    CommandSpec(
        name=".schema",
        usage=".schema [TABLE]",
        summary="show CREATE statements",
        parse=_optional_table(lambda t: Schema(table=t), ".schema [TABLE]"),
    ),
    CommandSpec(
        name=".indexes",
        usage=".indexes [TABLE]",
        summary="list indexes",
        parse=_optional_table(lambda t: Indexes(table=t), ".indexes [TABLE]"),
        aliases=("\\di",),
    ),
    CommandSpec(
        name=".mode",
        usage=".mode [table|vertical|csv|tsv|jsonl|json]",
        summary="set or show how results are printed",
        parse=_parse_mode,
    ),
    CommandSpec(
        name=".headers",
        usage=".headers [on|off]",
        summary="column names and footers on or off",
        parse=_parse_switch(lambda on: Headers(on=on), ".headers [on|off]"),
    ),
    CommandSpec(
        name=".timer",
        usage=".timer [on|off]",
        summary="print how long each statement took",
        parse=_parse_switch(lambda on: Timer(on=on), ".timer [on|off]"),
        aliases=("\\timing",),
    ),
    CommandSpec(
        name=".trace",
        usage=".trace [on|off]",
        summary="print route, ranges, groups, leaders, retries and latency per statement",
        parse=_parse_switch(lambda on: Trace(on=on), ".trace [on|off]"),
    ),
    CommandSpec(
        name=".read",
        usage=".read FILE",
        summary="run the statements and commands in FILE",
        parse=_parse_path(lambda p: Read(path=p), ".read FILE"),
        aliases=("\\i",),
    ),
    CommandSpec(
        name=".output",
        usage=".output [FILE]",
        summary="send results to FILE (no FILE: back to standard output)",
        parse=_parse_output,
        aliases=("\\o",),
    ),
    CommandSpec(
        name=".nodes",
        usage=".nodes",
        summary="list nodes with address and liveness",
        parse=_no_args(Nodes(), ".nodes"),
    ),
    CommandSpec(
        name=".groups",
        usage=".groups",
        summary="list consensus groups with backend, leader, replicas and ranges",
        parse=_no_args(Groups(), ".groups"),
    ),
    CommandSpec(
        name=".ranges",
        usage=".ranges [TABLE]",
        summary="list key ranges and the group that owns each",
        parse=_optional_table(lambda t: Ranges(table=t), ".ranges [TABLE]"),
    ),
    CommandSpec(
        name=".leader",
        usage=".leader TABLE KEY",
        summary="show the range, group and leader node for one primary key",
        parse=_parse_leader,
    ),
    CommandSpec(
        name=".consistency",
        usage=".consistency [linearizable|lease|stale]",
        summary="set or show the read consistency",
        parse=_parse_consistency,
    ),
    CommandSpec(
        name=".backend",
        usage=".backend",
        summary="show the consensus backend of the cluster and of each table",
        parse=_no_args(Backend(), ".backend"),
    ),
    CommandSpec(
        name=".split",
        usage=".split TABLE AT KEY [KEY ...]",
        summary="split TABLE's ranges at the given primary keys",
        parse=_parse_split,
    ),
    CommandSpec(
        name=".transfer",
        usage=".transfer GROUP NODE",
        summary="move GROUP's leadership to NODE",
        parse=_parse_transfer,
    ),
    CommandSpec(
        name=".partition",
        usage=".partition NODE... | NODE... [| NODE...]",
        summary="fault: cut the network between the sides",
        parse=_parse_partition,
    ),
    CommandSpec(
        name=".isolate",
        usage=".isolate NODE",
        summary="fault: cut NODE off from every other node",
        parse=_parse_one_node(lambda n: Isolate(node=n), ".isolate NODE"),
    ),
    CommandSpec(
        name=".heal",
        usage=".heal",
        summary="fault: remove every partition, isolation and slowdown",
        parse=_no_args(Fault(command=Heal()), ".heal"),
    ),
    CommandSpec(
        name=".crash",
        usage=".crash NODE",
        summary="fault: kill NODE's process",
        parse=_parse_one_node(lambda n: Crash(node=n), ".crash NODE"),
    ),
    CommandSpec(
        name=".restart",
        usage=".restart NODE",
        summary="fault: start a crashed NODE again",
        parse=_parse_one_node(lambda n: Restart(node=n), ".restart NODE"),
    ),
    CommandSpec(
        name=".slow",
        usage=".slow NODE DELAY (e.g. 50ms)",
        summary="fault: delay every message NODE sends",
        parse=_parse_slow,
    ),
    CommandSpec(
        name=".skew",
        usage=".skew NODE OFFSET (e.g. +300ms)",
        summary="fault: shift NODE's clock",
        parse=_parse_skew,
    ),
)

SPECS_BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in SPECS}

# Aliases that map onto a command with a different meaning than the plain name.
_SPECIAL: dict[str, Callable[[list[str]], Command]] = {
    "\\x": _parse_expanded,
    "\\t": _parse_tuples_only,
    "\\d": _parse_describe,
}

_PARSERS: dict[str, Callable[[list[str]], Command]] = {
    **{spec.name: spec.parse for spec in SPECS},
    **{alias: spec.parse for spec in SPECS for alias in spec.aliases},
    **_SPECIAL,
}

#: Every word that starts a command, for completion.
COMMAND_WORDS: tuple[str, ...] = tuple(sorted(_PARSERS))


def is_command(line: str) -> bool:
    """True when ``line`` is a dot-command or backslash alias rather than SQL."""
    return line.lstrip().startswith((".", "\\"))


def parse_command(line: str) -> Command:
    """Parse one dot-command line (``.tables``, ``\\d users``)."""
    tokens = _tokens(line.strip())
    if not tokens:
        raise CommandError("empty command; try .help")
    name, args = tokens[0], tokens[1:]
    parser = _PARSERS.get(name.lower() if name.startswith(".") else name)
    if parser is None:
        raise CommandError(f"unknown command {name}; try .help")
    return parser(args)


_ALIAS_HELP = (
    ("\\d [TABLE]", ".tables, or .schema TABLE"),
    ("\\x [on|off|auto]", "vertical records on, off, or only for rows too wide to fit"),
    ("\\t [on|off]", "tuples only: the opposite of .headers"),
)


def help_text() -> str:
    """The ``.help`` listing."""
    width = max(len(spec.usage) for spec in SPECS)
    lines = []
    for spec in SPECS:
        aliases = f"  (also {', '.join(spec.aliases)})" if spec.aliases else ""
        lines.append(f"{spec.usage.ljust(width)}  {spec.summary}{aliases}")
    lines.extend(f"{usage.ljust(width)}  {summary}" for usage, summary in _ALIAS_HELP)
    lines.append("")
    lines.append("SQL statements end with ';' and may span lines.")
    return "\n".join(lines)
