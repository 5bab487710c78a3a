"""Compact, deterministic text for everything a core hands out, for golden files.

Message bodies are rendered generically from their dataclass fields, so any backend's
messages print without a per-message formatter: ``1->2 AppendEntries term=2 prev_index=3
prev_term=1 entries=[4/2 NORMAL "x"] commit=3``. Fields equal to their declared default are
left out (``pre_vote=false``, ``context=0``), which keeps lines short and makes the unusual
visible. Fields typed ``Term`` print through the backend's term formatter: a plain integer for
Raft, ``round.node`` for a Multi-Paxos ballot. Entries print as ``index/term KIND data``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from collections.abc import Callable, Iterable
from typing import Any

from consensus.api import MembershipChange, PeerProgress, Ready, Status
from consensus.membership import decode_conf_entry
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    Snapshot,
    SnapshotMeta,
    Term,
)

MAX_INLINE_BYTES = 40


def format_bytes(data: bytes) -> str:
    """Short printable payloads verbatim in quotes, anything else by size."""
    if len(data) <= MAX_INLINE_BYTES and all(0x20 <= b < 0x7F and b not in b'"\\' for b in data):
        return '"' + data.decode("ascii") + '"'
    return f"<{len(data)} bytes>"


def format_ops(change: MembershipChange) -> str:
    """The script's own notation: ``v4`` add voter, ``l5`` add learner, ``r2`` remove."""
    letter = {"ADD_VOTER": "v", "ADD_LEARNER": "l", "REMOVE": "r"}
    return " ".join(f"{letter[op.kind.name]}{op.node}" for op in change.ops) or "leave-joint"


def format_ids(ids: Iterable[int]) -> str:
    return "(" + " ".join(str(int(i)) for i in ids) + ")"


def format_log_value(value: object) -> str:
    """A log keyword argument: ints and strings as is, bools lower-case, lists as ``(a b)``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return format_ids(value) if all(isinstance(v, int) for v in value) else str(list(value))
    if isinstance(value, enum.Enum):
        return value.name.lower()
    return str(value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Renderer:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._term: Callable[[int], str] = str
        if backend == "paxos":
            from consensus.paxos.ballot import format_ballot

            self._term = lambda t: format_ballot(Term(t)) if t else "0"

    # ------------------------------------------------------------------ values

    def term(self, term: int) -> str:
        return self._term(int(term))

    def _decode_conf(self, data: bytes) -> str:
        # Both backends write the shared CONFIG format: the ops and the resulting configuration.
        change, conf = decode_conf_entry(data)
        return f"{format_ops(change)} -> {self.conf(conf)}"

    def conf(self, conf: ConfState) -> str:
        parts = [f"voters={format_ids(conf.voters)}"]
        if conf.voters_outgoing:
            parts.append(f"outgoing={format_ids(conf.voters_outgoing)}")
        if conf.learners:
            parts.append(f"learners={format_ids(conf.learners)}")
        return " ".join(parts)

    def entry(self, entry: Entry) -> str:
        text = f"{entry.index}/{self.term(entry.term)} {entry.kind.name}"
        if entry.kind is EntryKind.NORMAL:
            text += " " + format_bytes(entry.data)
        elif entry.kind is EntryKind.CONFIG:
            try:
                text += " " + self._decode_conf(entry.data)
            except Exception:  # a golden file must show garbage, not crash on it
                text += " " + format_bytes(entry.data)
        elif entry.data:
            text += " " + format_bytes(entry.data)
        if entry.accepted_ballot:
            text += f" acc={self.term(entry.accepted_ballot)}"
        return text

    def entries(self, entries: Iterable[Entry]) -> str:
        return "[" + ", ".join(self.entry(e) for e in entries) + "]"

    def meta(self, meta: SnapshotMeta) -> str:
        return f"{meta.index}/{self.term(meta.term)}[{self.conf(meta.conf)}]"

    def snapshot(self, snap: Snapshot) -> str:
        return f"{self.meta(snap.meta)} {format_bytes(snap.data)}"

    def hard_state(self, hs: HardState) -> str:
        text = f"term={self.term(hs.term)}"
        if self.backend != "paxos":  # Multi-Paxos leaves ``vote`` unused
            text += f" vote={hs.vote}"
        return text + f" commit={hs.commit}"

    def value(self, value: object, hint: object) -> str:
        if hint is Term:
            return self.term(int(typing.cast(int, value)))
        match value:
            case bool():
                return "true" if value else "false"
            case enum.Enum():
                return value.name.lower()
            case bytes():
                return format_bytes(value)
            case Entry():
                return self.entry(value)
            case SnapshotMeta():
                return self.meta(value)
            case ConfState():
                return self.conf(value)
            case tuple() if all(isinstance(v, Entry) for v in value):
                return self.entries(typing.cast(tuple[Entry, ...], value))
            case tuple():
                return "(" + " ".join(self.value(v, None) for v in value) + ")"
            case _:
                return str(value)

    # ------------------------------------------------------------------ messages

    def body(self, body: object) -> str:
        if not dataclasses.is_dataclass(body) or isinstance(body, type):
            return repr(body)
        hints = _hints(type(body))
        parts = [type(body).__name__]
        for f in dataclasses.fields(body):
            value = getattr(body, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            parts.append(f"{f.name}={self.value(value, hints.get(f.name))}")
        return " ".join(parts)

    def message(self, message: Message) -> str:
        return f"{message.src}->{message.dst} {self.body(message.body)}"

    # ------------------------------------------------------------------ Ready and Status

    def ready(self, rd: Ready, note: Callable[[Message], str] = lambda m: "") -> list[str]:
        """In processing order: persist, send, apply (consensus.api). ``note`` annotates a
        message (e.g. what the network did with it)."""
        lines = [f"Ready must_sync={'true' if rd.must_sync else 'false'}:"]
        if rd.hard_state is not None:
            lines.append(f"HardState {self.hard_state(rd.hard_state)}")
        if rd.truncate_from is not None:
            lines.append(f"TruncateFrom {rd.truncate_from}")
        if rd.entries:
            lines.append("Entries:")
            lines.extend(self.entry(e) for e in rd.entries)
        if rd.snapshot is not None:
            lines.append(f"Snapshot {self.snapshot(rd.snapshot)}")
        if rd.messages:
            lines.append("Messages:")
            lines.extend(self.message(m) + note(m) for m in rd.messages)
        if rd.apply_snapshot is not None:
            lines.append(f"ApplySnapshot {self.snapshot(rd.apply_snapshot)}")
        if rd.committed_entries:
            lines.append("CommittedEntries:")
            lines.extend(self.entry(e) for e in rd.committed_entries)
        if rd.read_states:
            lines.append("ReadStates:")
            lines.extend(f"id={r.request_id} index={r.index}" for r in rd.read_states)
        return lines

    def progress(self, node: int, pr: PeerProgress) -> str:
        active = "true" if pr.recent_active else "false"
        return f"{node}: match={pr.match} next={pr.next} {pr.state} active={active}"

    def status(self, st: Status) -> list[str]:
        lines = [
            f"{st.role.value} term={self.term(st.term)} leader={st.leader} commit={st.commit} "
            f"applied={st.applied} first={st.first_index} last={st.last_index}",
            self.conf(st.conf),
        ]
        if st.transferring_to:
            lines.append(f"transferring_to={st.transferring_to}")
        lines.extend(self.progress(node, pr) for node, pr in sorted(st.progress.items()))
        return lines
