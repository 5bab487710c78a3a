"""YCSB's CoreWorkload: properties, workloads A-F, the load and run operation streams, and
the SQL each operation becomes on shardb.

Properties follow YCSB (``-P file`` in Java properties format, then ``-p key=value``
overrides, later wins). Unknown properties are kept in ``CoreWorkloadConfig.ignored`` rather
than refused, because real YCSB files carry client and binding settings (``db``,
``threadcount``, ``filterproportion`` in workload D, ...) that a strict parser would reject.

Table mapping (decided here, ADR material): one table
``usertable(ycsb_key TEXT PRIMARY KEY, field0 TEXT, ..., field<n-1> TEXT)``. The primary key
is YCSB's key string, so shardb's key ranges are ranges of those strings and a YCSB scan
(start key + count, in key order) is one range SELECT. ``insertorder=hashed`` (the default)
scatters consecutive inserts over the key space, as in YCSB.

Reference: Cooper et al., "Benchmarking Cloud Serving Systems with YCSB", SoCC 2010, §4;
YCSB ``CoreWorkload.java`` and ``workloads/workload[a-f]``.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from shardb.workload.generators import (
    AcknowledgedCounter,
    ConstantGenerator,
    CounterGenerator,
    DiscreteGenerator,
    HotspotIntegerGenerator,
    NumberGenerator,
    ScrambledZipfianGenerator,
    SequentialGenerator,
    SkewedLatestGenerator,
    UniformLongGenerator,
    ZipfianGenerator,
    fnv_hash64,
)
from shardb.workload.outcome import Outcome

KEY_COLUMN: Final = "ycsb_key"

SqlValue = None | int | float | str | bytes


class WorkloadConfigError(ValueError):
    """A property is missing, malformed or out of range; the message names it."""


class OpKind(enum.Enum):
    READ = "read"
    UPDATE = "update"
    INSERT = "insert"
    SCAN = "scan"
    READ_MODIFY_WRITE = "read_modify_write"


@dataclass(frozen=True, slots=True, kw_only=True)
class YcsbOp:
    kind: OpKind
    key: str
    keynum: int
    fields: tuple[str, ...] = ()
    """Columns to read (READ, SCAN, the read of READ_MODIFY_WRITE); empty means all."""
    values: tuple[tuple[str, str], ...] = ()
    """Columns to write and their new values (INSERT, UPDATE, READ_MODIFY_WRITE)."""
    scan_length: int = 0

    @property
    def label(self) -> str:
        return self.kind.value


@dataclass(frozen=True, slots=True)
class SqlStatement:
    """One statement of the SQL protocol's ``sql`` op: text plus qmark parameters."""

    sql: str
    params: tuple[SqlValue, ...] = ()


# ---------------------------------------------------------------------------------------------
# Properties


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and i + 6 <= len(text):
            try:
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            except ValueError:
                pass
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
        i += 2
    return "".join(out)


def _logical_lines(text: str) -> Iterable[str]:
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip() if pending else raw
        if not pending and (not line.strip() or line.lstrip()[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes continues the line
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield "".join(pending)
        pending = []
    if pending:
        yield "".join(pending)


def parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties`` text: ``#``/``!`` comments, ``key=value``, ``key: value`` or
    ``key value``, backslash continuation lines and escapes. Later keys win."""
    result: dict[str, str] = {}
    for line in _logical_lines(text):
        line = line.lstrip()
        end = 0
        while end < len(line):
            char = line[end]
            if char == "\\":
                end += 2
                continue
            if char in "=: \t\f":
                break
            end += 1
        key = line[:end]
        rest = line[end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        result[_unescape(key)] = _unescape(rest.rstrip())
    return result


def parse_override(text: str) -> tuple[str, str]:
    """One ``-p key=value`` argument."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise WorkloadConfigError(f"-p expects key=value, got {text!r}")
    return key.strip(), value.strip()


_BASE: Final = {
    "recordcount": "1000",
    "operationcount": "1000",
    "workload": "site.ycsb.workloads.CoreWorkload",
    "readallfields": "true",
}
WORKLOADS: Final[Mapping[str, Mapping[str, str]]] = {
    # A: update heavy (session store recording recent actions).
    "workloada": {
        **_BASE,
        "readproportion": "0.5",
        "updateproportion": "0.5",
        "scanproportion": "0",
        "insertproportion": "0",
        "requestdistribution": "zipfian",
    },
    # B: read mostly (photo tagging).
    "workloadb": {
        **_BASE,
        "readproportion": "0.95",
        "updateproportion": "0.05",
        "scanproportion": "0",
        "insertproportion": "0",
        "requestdistribution": "zipfian",
    },
    # C: read only (user profile cache).
    "workloadc": {
        **_BASE,
        "readproportion": "1",
        "updateproportion": "0",
        "scanproportion": "0",
        "insertproportion": "0",
        "requestdistribution": "zipfian",
    },
    # D: read latest (status updates).
    "workloadd": {
        **_BASE,
        "readproportion": "0.95",
        "updateproportion": "0",
        "scanproportion": "0",
        "insertproportion": "0.05",
        "requestdistribution": "latest",
    },
    # E: short ranges (threaded conversations).
    "workloade": {
        **_BASE,
        "readproportion": "0",
        "updateproportion": "0",
        "scanproportion": "0.95",
        "insertproportion": "0.05",
        "requestdistribution": "zipfian",
        "maxscanlength": "100",
        "scanlengthdistribution": "uniform",
    },
    # F: read-modify-write (user database).
    "workloadf": {
        **_BASE,
        "readproportion": "0.5",
        "updateproportion": "0",
        "scanproportion": "0",
        "insertproportion": "0",
        "readmodifywriteproportion": "0.5",
        "requestdistribution": "zipfian",
    },
}


def builtin_workload(name: str) -> dict[str, str]:
    """Workload ``a``..``f`` (or ``workloada``..): YCSB's standard property sets."""
    key = name.lower()
    key = key if key.startswith("workload") else f"workload{key}"
    if key not in WORKLOADS:
        raise WorkloadConfigError(
            f"unknown workload {name!r}; built in: {', '.join(sorted(WORKLOADS))}"
        )
    return dict(WORKLOADS[key])


def _is_builtin_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in WORKLOADS or f"workload{lowered}" in WORKLOADS


def load_properties(
    files: Sequence[str | Path] = (), overrides: Sequence[str] = ()
) -> dict[str, str]:
    """Merge ``-P`` files in order, then ``-p key=value`` overrides (later wins, as in YCSB).

    A ``-P`` name that is not an existing file but names a standard workload (``workloada``,
    ``b``, ...) loads the built-in property set, so ``-P workloada`` works without the file.
    """
    merged: dict[str, str] = {}
    for spec in files:
        path = Path(spec)
        if path.is_file():
            merged.update(parse_properties(path.read_text(encoding="utf-8")))
        elif _is_builtin_name(str(spec)):
            merged.update(builtin_workload(str(spec)))
        else:
            raise WorkloadConfigError(f"property file {str(spec)!r} not found")
    for override in overrides:
        key, value = parse_override(override)
        merged[key] = value
    return merged


_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REQUEST_DISTRIBUTIONS: Final = ("uniform", "zipfian", "latest", "hotspot", "sequential")
_FIELD_LENGTH_DISTRIBUTIONS: Final = ("constant", "uniform", "zipfian")
_SCAN_LENGTH_DISTRIBUTIONS: Final = ("uniform", "zipfian")

# Properties read by the YCSB client or by bindings, not by the workload: known, not used here.
_CLIENT_PROPERTIES: Final = frozenset(
    {"workload", "db", "threadcount", "target", "maxexecutiontime", "exporter", "exportfile",
     "measurementtype", "measurement.interval", "status.interval", "hdrhistogram.percentiles",
     "histogram.buckets", "timeseries.granularity"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreWorkloadConfig:
    """CoreWorkload's properties, parsed and checked. Defaults are YCSB's, except
    ``recordcount``/``operationcount`` which default to the standard files' 1000."""

    table: str = "usertable"
    record_count: int = 1000
    operation_count: int = 1000
    """0 = unlimited: the phase's duration ends the run."""
    field_count: int = 10
    field_length: int = 100
    min_field_length: int = 1
    field_length_distribution: str = "constant"
    field_name_prefix: str = "field"
    read_all_fields: bool = True
    write_all_fields: bool = False
    read_proportion: float = 0.95
    update_proportion: float = 0.05
    insert_proportion: float = 0.0
    scan_proportion: float = 0.0
    read_modify_write_proportion: float = 0.0
    request_distribution: str = "uniform"
    min_scan_length: int = 1
    max_scan_length: int = 1000
    scan_length_distribution: str = "uniform"
    insert_start: int = 0
    insert_count: int = -1
    """-1 = ``record_count - insert_start`` (resolved by ``from_properties``)."""
    ordered_inserts: bool = False
    zero_padding: int = 1
    hotspot_data_fraction: float = 0.2
    hotspot_opn_fraction: float = 0.8
    ignored: tuple[str, ...] = field(default=())
    """Properties present but not used by the workload (sorted)."""

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f"{self.field_name_prefix}{i}" for i in range(self.field_count))

    @property
    def proportions(self) -> dict[OpKind, float]:
        return {
            OpKind.READ: self.read_proportion,
            OpKind.UPDATE: self.update_proportion,
            OpKind.INSERT: self.insert_proportion,
            OpKind.SCAN: self.scan_proportion,
            OpKind.READ_MODIFY_WRITE: self.read_modify_write_proportion,
        }

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> CoreWorkloadConfig:
        used: set[str] = set()

        def text(name: str, default: str) -> str:
            used.add(name)
            return props.get(name, default).strip()

        def integer(name: str, default: int, *, minimum: int = 0) -> int:
            raw = text(name, str(default))
            try:
                value = int(raw)
            except ValueError:
                raise WorkloadConfigError(f"{name} must be an integer, got {raw!r}") from None
            if value < minimum:
                raise WorkloadConfigError(f"{name} must be >= {minimum}, got {value}")
            return value

        def number(name: str, default: float) -> float:
            raw = text(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                raise WorkloadConfigError(f"{name} must be a number, got {raw!r}") from None
            if not math.isfinite(value) or value < 0:
                raise WorkloadConfigError(f"{name} must be a finite number >= 0, got {raw!r}")
            return value

        def fraction(name: str, default: float) -> float:
            value = number(name, default)
            if value > 1:
                raise WorkloadConfigError(f"{name} must be in [0, 1], got {value}")
            return value

        def boolean(name: str, default: bool) -> bool:
            # Java's Boolean.parseBoolean: "true" in any case is true, anything else false.
            return text(name, "true" if default else "false").lower() == "true"

        def choice(name: str, default: str, allowed: Sequence[str]) -> str:
            value = text(name, default)
            if value not in allowed:
                raise WorkloadConfigError(
                    f"{name} must be one of {', '.join(allowed)}; got {value!r}"
                )
            return value

        def identifier(name: str, default: str) -> str:
            value = text(name, default)
            if not _IDENTIFIER.match(value):
                raise WorkloadConfigError(f"{name} must be an SQL identifier, got {value!r}")
            return value

        if boolean("dataintegrity", False):
            raise WorkloadConfigError("dataintegrity=true is not supported")
        if text("requestdistribution", "uniform") == "exponential":
            raise WorkloadConfigError("requestdistribution=exponential is not supported")
        if text("fieldlengthdistribution", "constant") == "histogram":
            raise WorkloadConfigError("fieldlengthdistribution=histogram is not supported")

        record_count = integer("recordcount", 1000, minimum=1)
        insert_start = integer("insertstart", 0)
        insert_count = integer("insertcount", record_count - insert_start)
        if insert_start + insert_count > record_count:
            raise WorkloadConfigError(
                f"insertstart ({insert_start}) + insertcount ({insert_count}) exceeds "
                f"recordcount ({record_count})"
            )
        if insert_count < 1:
            raise WorkloadConfigError("insertcount must be >= 1")
        field_length = integer("fieldlength", 100, minimum=1)
        min_field_length = integer("minfieldlength", 1, minimum=1)
        min_scan = integer("minscanlength", 1, minimum=1)
        max_scan = integer("maxscanlength", 1000, minimum=1)
        if min_scan > max_scan:
            raise WorkloadConfigError(f"minscanlength {min_scan} > maxscanlength {max_scan}")
        insert_order = choice("insertorder", "hashed", ("hashed", "ordered"))
        config = cls(
            table=identifier("table", "usertable"),
            record_count=record_count,
            operation_count=integer("operationcount", 1000),
            field_count=integer("fieldcount", 10, minimum=1),
            field_length=field_length,
            min_field_length=min(min_field_length, field_length),
            field_length_distribution=choice(
                "fieldlengthdistribution", "constant", _FIELD_LENGTH_DISTRIBUTIONS
            ),
            field_name_prefix=identifier("fieldnameprefix", "field"),
            read_all_fields=boolean("readallfields", True),
            write_all_fields=boolean("writeallfields", False),
            read_proportion=fraction("readproportion", 0.95),
            update_proportion=fraction("updateproportion", 0.05),
            insert_proportion=fraction("insertproportion", 0.0),
            scan_proportion=fraction("scanproportion", 0.0),
            read_modify_write_proportion=fraction("readmodifywriteproportion", 0.0),
            request_distribution=choice("requestdistribution", "uniform", _REQUEST_DISTRIBUTIONS),
            min_scan_length=min_scan,
            max_scan_length=max_scan,
            scan_length_distribution=choice(
                "scanlengthdistribution", "uniform", _SCAN_LENGTH_DISTRIBUTIONS
            ),
            insert_start=insert_start,
            insert_count=insert_count,
            ordered_inserts=insert_order == "ordered",
            zero_padding=integer("zeropadding", 1, minimum=1),
            hotspot_data_fraction=fraction("hotspotdatafraction", 0.2),
            hotspot_opn_fraction=fraction("hotspotopnfraction", 0.8),
        )
        if sum(config.proportions.values()) <= 0:
            raise WorkloadConfigError("every operation proportion is 0")
        ignored = sorted(k for k in props if k not in used and k not in _CLIENT_PROPERTIES)
        return replace(config, ignored=tuple(ignored))


# ---------------------------------------------------------------------------------------------
# Keys, values and SQL


def build_key_name(keynum: int, zero_padding: int = 1, ordered: bool = False) -> str:
    """YCSB's ``buildKeyName``: ``"user"`` + (hashed unless ordered) number, zero-padded."""
    number = str(keynum if ordered else fnv_hash64(keynum))
    return "user" + "0" * max(0, zero_padding - len(number)) + number


# YCSB's RandomByteIterator draws printable ASCII; any printable text would do.
_ALPHABET: Final = "".join(chr(c) for c in range(ord(" "), ord("~") + 1))


@dataclass(frozen=True, slots=True)
class UserTable:
    """The SQL for each YCSB operation on ``<table>(ycsb_key TEXT PRIMARY KEY, fields...)``."""

    name: str
    field_names: tuple[str, ...]

    @classmethod
    def for_config(cls, config: CoreWorkloadConfig) -> UserTable:
        return cls(config.table, config.field_names)

    def create_sql(self) -> str:
        columns = ", ".join(f"{name} TEXT" for name in self.field_names)
        return f"CREATE TABLE {self.name} ({KEY_COLUMN} TEXT PRIMARY KEY, {columns})"

    def _columns(self, fields: tuple[str, ...]) -> str:
        return ", ".join((KEY_COLUMN, *(fields or self.field_names)))

    def statements(self, op: YcsbOp) -> tuple[SqlStatement, ...]:
        """The statements ``op`` runs, in order (READ_MODIFY_WRITE: SELECT, then UPDATE)."""
        match op.kind:
            case OpKind.READ:
                return (self._select(op),)
            case OpKind.SCAN:
                return (
                    SqlStatement(
                        f"SELECT {self._columns(op.fields)} FROM {self.name} "
                        f"WHERE {KEY_COLUMN} >= ? ORDER BY {KEY_COLUMN} LIMIT ?",
                        (op.key, op.scan_length),
                    ),
                )
            case OpKind.INSERT:
                names = ", ".join((KEY_COLUMN, *(name for name, _ in op.values)))
                marks = ", ".join("?" * (len(op.values) + 1))
                return (
                    SqlStatement(
                        f"INSERT INTO {self.name} ({names}) VALUES ({marks})",
                        (op.key, *(value for _, value in op.values)),
                    ),
                )
            case OpKind.UPDATE:
                return (self._update(op),)
            case OpKind.READ_MODIFY_WRITE:
                return (self._select(op), self._update(op))

    def _select(self, op: YcsbOp) -> SqlStatement:
        return SqlStatement(
            f"SELECT {self._columns(op.fields)} FROM {self.name} WHERE {KEY_COLUMN} = ?",
            (op.key,),
        )

    def _update(self, op: YcsbOp) -> SqlStatement:
        assignments = ", ".join(f"{name} = ?" for name, _ in op.values)
        return SqlStatement(
            f"UPDATE {self.name} SET {assignments} WHERE {KEY_COLUMN} = ?",
            (*(value for _, value in op.values), op.key),
        )


# ---------------------------------------------------------------------------------------------
# The workload


class CoreWorkload:
    """YCSB's CoreWorkload as two operation streams over one seeded ``random.Random``.

    ``load_phase()`` yields the inserts of records ``insertstart .. insertstart+insertcount-1``.
    ``next_operation()`` is the run phase's mix; the driver must call ``complete(op, outcome)``
    after each operation, because a run-phase INSERT's key only becomes eligible for reads once
    acknowledged (YCSB's AcknowledgedCounterGenerator).
    """

    def __init__(self, config: CoreWorkloadConfig, *, rng: random.Random) -> None:
        self.config = config
        self.table = UserTable.for_config(config)
        self._rng = rng
        self._fields = config.field_names
        self._issued = 0
        self._load_keys = CounterGenerator(config.insert_start)
        self._loaded = 0
        self._insert_keys = AcknowledgedCounter(config.record_count)
        self._chooser: DiscreteGenerator[OpKind] = DiscreteGenerator(rng=rng)
        for kind, proportion in config.proportions.items():
            if proportion > 0:
                self._chooser.add_value(proportion, kind)
        self._field_chooser = UniformLongGenerator(0, config.field_count - 1, rng=rng)
        self._field_length = self._field_length_generator(config, rng)
        self._scan_length: NumberGenerator
        if config.scan_length_distribution == "zipfian":
            self._scan_length = ZipfianGenerator(
                config.min_scan_length, config.max_scan_length, rng=rng
            )
        else:
            self._scan_length = UniformLongGenerator(
                config.min_scan_length, config.max_scan_length, rng=rng
            )
        self._keys = self._key_chooser(config, rng)

    @staticmethod
    def _field_length_generator(config: CoreWorkloadConfig, rng: random.Random) -> NumberGenerator:
        match config.field_length_distribution:
            case "uniform":
                return UniformLongGenerator(config.min_field_length, config.field_length, rng=rng)
            case "zipfian":
                return ZipfianGenerator(config.min_field_length, config.field_length, rng=rng)
            case _:
                return ConstantGenerator(config.field_length)

    def _key_chooser(self, config: CoreWorkloadConfig, rng: random.Random) -> NumberGenerator:
        first = config.insert_start
        last = config.insert_start + config.insert_count - 1
        match config.request_distribution:
            case "zipfian":
                # Size the key space for the inserts the run will make (YCSB's fudge factor 2),
                # so keys inserted later are popular too; draws above the acknowledged limit
                # are redrawn in _next_keynum.
                expected_new = int(config.operation_count * config.insert_proportion * 2.0)
                return ScrambledZipfianGenerator(first, last + 1 + expected_new, rng=rng)
            case "latest":
                return SkewedLatestGenerator(self._insert_keys, rng=rng)
            case "hotspot":
                return HotspotIntegerGenerator(
                    first,
                    last,
                    hot_set_fraction=config.hotspot_data_fraction,
                    hot_operation_fraction=config.hotspot_opn_fraction,
                    rng=rng,
                )
            case "sequential":
                return SequentialGenerator(first, last)
            case _:
                return UniformLongGenerator(first, last, rng=rng)

    def key_name(self, keynum: int) -> str:
        return build_key_name(keynum, self.config.zero_padding, self.config.ordered_inserts)

    def _value(self) -> str:
        return "".join(self._rng.choices(_ALPHABET, k=self._field_length.next_value()))

    def _all_values(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, self._value()) for name in self._fields)

    def _one_field(self) -> str:
        return self._fields[self._field_chooser.next_value()]

    def _write_values(self) -> tuple[tuple[str, str], ...]:
        if self.config.write_all_fields:
            return self._all_values()
        return ((self._one_field(), self._value()),)

    def _read_fields(self) -> tuple[str, ...]:
        return () if self.config.read_all_fields else (self._one_field(),)

    def _next_keynum(self) -> int:
        limit = self._insert_keys.last_value()
        while True:
            keynum = self._keys.next_value()
            if keynum <= limit:
                return keynum

    # -- load phase ---------------------------------------------------------------------------

    def next_insert(self) -> YcsbOp | None:
        """The next load-phase insert, or None when ``insertcount`` records are done."""
        if self._loaded >= self.config.insert_count:
            return None
        self._loaded += 1
        keynum = self._load_keys.next_value()
        key = self.key_name(keynum)
        return YcsbOp(kind=OpKind.INSERT, key=key, keynum=keynum, values=self._all_values())

    def load_phase(self) -> LoadPhase:
        return LoadPhase(self)

    # -- run phase ----------------------------------------------------------------------------

    def next_operation(self) -> YcsbOp | None:
        """The next run-phase operation; None after ``operationcount`` (if not 0)."""
        if self.config.operation_count and self._issued >= self.config.operation_count:
            return None
        self._issued += 1
        kind = self._chooser.next_value()
        if kind is OpKind.INSERT:
            keynum = self._insert_keys.next_value()
            return YcsbOp(
                kind=kind, key=self.key_name(keynum), keynum=keynum, values=self._all_values()
            )
        keynum = self._next_keynum()
        key = self.key_name(keynum)
        match kind:
            case OpKind.READ:
                return YcsbOp(kind=kind, key=key, keynum=keynum, fields=self._read_fields())
            case OpKind.SCAN:
                return YcsbOp(
                    kind=kind,
                    key=key,
                    keynum=keynum,
                    fields=self._read_fields(),
                    scan_length=self._scan_length.next_value(),
                )
            case OpKind.UPDATE:
                return YcsbOp(kind=kind, key=key, keynum=keynum, values=self._write_values())
            case _:
                return YcsbOp(
                    kind=kind,
                    key=key,
                    keynum=keynum,
                    fields=self._read_fields(),
                    values=self._write_values(),
                )

    def complete(self, op: YcsbOp, outcome: Outcome) -> None:
        """Report that ``op`` finished. A run-phase insert is acknowledged whatever its outcome
        (as YCSB does in a ``finally``): a key that never becomes eligible would stall
        ``latest`` forever, while a read of a missing row is just a miss."""
        del outcome
        if op.kind is OpKind.INSERT and op.keynum >= self.config.record_count:
            self._insert_keys.acknowledge(op.keynum)

    @property
    def acknowledged_limit(self) -> int:
        """The highest key number every read may target."""
        return self._insert_keys.last_value()


class LoadPhase:
    """The load phase as an operation source for the driver."""

    def __init__(self, workload: CoreWorkload) -> None:
        self._workload = workload

    def next_operation(self) -> YcsbOp | None:
        return self._workload.next_insert()

    def complete(self, op: YcsbOp, outcome: Outcome) -> None:
        del op, outcome
