"""The replicated key-value state machine the simulator's workload runs on.

Every key is a register holding an ``int`` (or nothing). A command is the msgpack array
``[client, seq, op, key, value, expected]``; ``(client, seq)`` names one client operation, so
the store also remembers which operations it has applied. That record travels in snapshots,
which is what lets the end-of-run checker ask "is this acknowledged write in the state of
every replica?" even for replicas that caught up from a snapshot and never saw the entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack


class Op(enum.Enum):
    PUT = "put"
    GET = "get"
    CAS = "cas"


class MalformedCommand(ValueError):
    """Bytes that do not decode to a command: a replica must never see one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    client: int
    seq: int
    op: Op
    key: str
    value: int | None = None
    """PUT: the new value; CAS: the value to install if the register holds ``expected``."""
    expected: int | None = None
    """CAS only. ``None`` means "the key is absent"."""

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [self.client, self.seq, self.op.value, self.key, self.value, self.expected]
        )
        return packed

    @classmethod
    def decode(cls, data: bytes) -> Command:
        try:
            raw = msgpack.unpackb(data)
            client, seq, op, key, value, expected = raw
            command = cls(
                client=client, seq=seq, op=Op(op), key=key, value=value, expected=expected
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise MalformedCommand(f"cannot decode command {data!r}: {exc}") from exc
        if not isinstance(command.key, str) or not isinstance(command.client, int):
            raise MalformedCommand(f"bad command fields in {data!r}")
        return command


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyResult:
    ok: bool
    """PUT and GET: always True. CAS: whether the swap happened."""
    value: int | None
    """GET: the value read. CAS: the value the register held before. PUT: None."""


class KVStore:
    """Deterministic register map: the same commands in the same order give the same bytes."""

    __slots__ = ("_applied_ops", "_data", "_duplicates")

    def __init__(self) -> None:
        self._data: dict[str, int] = {}
        self._applied_ops: dict[int, set[int]] = {}
        self._duplicates: list[tuple[int, int]] = []

    def apply(self, data: bytes) -> ApplyResult:
        command = Command.decode(data)
        seqs = self._applied_ops.setdefault(command.client, set())
        if command.seq in seqs:
            # The workload never proposes one operation twice, so a repeat means a core
            # delivered one proposal at two indexes; the checker reports it.
            self._duplicates.append((command.client, command.seq))
        seqs.add(command.seq)
        current = self._data.get(command.key)
        match command.op:
            case Op.PUT:
                if command.value is None:
                    self._data.pop(command.key, None)
                else:
                    self._data[command.key] = command.value
                return ApplyResult(ok=True, value=None)
            case Op.GET:
                return ApplyResult(ok=True, value=current)
            case Op.CAS:
                if current != command.expected:
                    return ApplyResult(ok=False, value=current)
                if command.value is None:
                    self._data.pop(command.key, None)
                else:
                    self._data[command.key] = command.value
                return ApplyResult(ok=True, value=current)

    def get(self, key: str) -> int | None:
        return self._data.get(key)

    def has_applied(self, client: int, seq: int) -> bool:
        return seq in self._applied_ops.get(client, ())

    @property
    def duplicates(self) -> tuple[tuple[int, int], ...]:
        """Operations applied more than once, in the order the repeats happened."""
        return tuple(self._duplicates)

    def snapshot(self) -> bytes:
        """Canonical bytes: equal states give equal snapshots (sorted keys and seqs)."""
        image: dict[str, Any] = {
            "data": [[k, self._data[k]] for k in sorted(self._data)],
            "applied": [[c, sorted(self._applied_ops[c])] for c in sorted(self._applied_ops)],
        }
        packed: bytes = msgpack.packb(image)
        return packed

    def restore(self, data: bytes) -> None:
        image = msgpack.unpackb(data) if data else {"data": [], "applied": []}
        self._data = {k: v for k, v in image["data"]}
        self._applied_ops = {c: set(seqs) for c, seqs in image["applied"]}
        self._duplicates = []
