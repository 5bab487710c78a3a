"""A session test double for the shell: records every call and answers from a script.

``RecordingSession`` is not a database. Each test says what ``execute`` returns for which SQL
(an exact statement text, or a default), which errors it raises, and what ``meta`` shows;
the shell's behaviour is then asserted on what it printed and what it sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consensus.types import GroupId, NodeId
from shardb.shell.session import Cell, FaultCommand, FaultsDisabled


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeResult:
    kind: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Cell, ...], ...] = ()
    rowcount: int = -1
    trace: Mapping[str, Any] | None = None


class ScriptedError(Exception):
    """What the client raises: the server's error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def select(columns: Sequence[str], *rows: Sequence[Cell]) -> FakeResult:
    return FakeResult(
        kind="select", columns=tuple(columns), rows=tuple(tuple(r) for r in rows), rowcount=-1
    )


def write(rowcount: int) -> FakeResult:
    return FakeResult(kind="write", rowcount=rowcount)


DDL = FakeResult(kind="ddl")


@dataclass
class RecordingSession:
    """Satisfies ``shardb.shell.Session``; ``calls`` lists what the shell asked, in order."""

    address: str = "127.0.0.1:7001"
    backend: str = "raft"
    consistency: str = "linearizable"
    trace: bool = False
    results: dict[str, FakeResult | Exception] = field(default_factory=dict)
    default: FakeResult | Exception = field(default_factory=lambda: write(0))
    meta_view: Mapping[str, Any] = field(
        default_factory=lambda: {"nodes": [], "ranges": [], "tables": []}
    )
    faults_refusal: str | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        return [call[1] for call in self.calls if call[0] == "execute"]

    async def execute(self, sql: str, params: Sequence[Cell] = ()) -> FakeResult:
        self.calls.append(("execute", sql, tuple(params), self.consistency, self.trace))
        answer = self.results.get(sql, self.default)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def meta(self) -> Mapping[str, Any]:
        self.calls.append(("meta",))
        return self.meta_view

    async def transfer_leader(self, group_id: GroupId, node_id: NodeId) -> str:
        self.calls.append(("transfer", group_id, node_id))
        return f"group {group_id}: leadership moving to n{node_id}"

    async def faults(self, command: FaultCommand) -> str:
        self.calls.append(("faults", command))
        if self.faults_refusal is not None:
            raise FaultsDisabled(self.faults_refusal)
        return f"applied {type(command).__name__.lower()}"
