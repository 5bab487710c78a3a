"""The simulator's replicated KV state machine and its command encoding."""

from __future__ import annotations

import msgpack
import pytest

from consensus.sim.kv import ApplyResult, Command, KVStore, MalformedCommand, Op


def cmd(
    seq: int, op: Op, key: str = "k", value: int | None = None, expected: int | None = None
) -> bytes:
    return Command(client=1, seq=seq, op=op, key=key, value=value, expected=expected).encode()


def test_command_is_the_documented_msgpack_array() -> None:
    data = Command(client=3, seq=9, op=Op.CAS, key="a", value=2, expected=1).encode()
    assert msgpack.unpackb(data) == [3, 9, "cas", "a", 2, 1]
    assert Command.decode(data) == Command(client=3, seq=9, op=Op.CAS, key="a", value=2, expected=1)


def test_malformed_command_is_rejected() -> None:
    with pytest.raises(MalformedCommand):
        Command.decode(msgpack.packb([1, 2, "nope", "k", None, None]))
    with pytest.raises(MalformedCommand):
        Command.decode(b"\xc1")


def test_put_get_cas_semantics() -> None:
    kv = KVStore()
    assert kv.apply(cmd(1, Op.GET)) == ApplyResult(ok=True, value=None)
    assert kv.apply(cmd(2, Op.PUT, value=5)) == ApplyResult(ok=True, value=None)
    assert kv.apply(cmd(3, Op.GET)) == ApplyResult(ok=True, value=5)
    assert kv.apply(cmd(4, Op.CAS, value=6, expected=4)) == ApplyResult(ok=False, value=5)
    assert kv.apply(cmd(5, Op.CAS, value=6, expected=5)) == ApplyResult(ok=True, value=5)
    assert kv.get("k") == 6
    assert kv.apply(cmd(6, Op.CAS, key="new", value=1, expected=None)).ok
    assert kv.get("new") == 1


def test_snapshot_restore_round_trip() -> None:
    kv = KVStore()
    kv.apply(cmd(1, Op.PUT, key="a", value=1))
    kv.apply(cmd(2, Op.PUT, key="b", value=2))
    restored = KVStore()
    restored.restore(kv.snapshot())
    assert restored.snapshot() == kv.snapshot()
    assert restored.get("a") == 1 and restored.get("b") == 2
    assert restored.has_applied(1, 2) and not restored.has_applied(1, 3)


def test_snapshot_is_canonical() -> None:
    """Equal states give equal bytes, whatever order they were built in."""
    one, two = KVStore(), KVStore()
    one.apply(cmd(1, Op.PUT, key="a", value=1))
    one.apply(cmd(2, Op.PUT, key="b", value=2))
    two.apply(cmd(2, Op.PUT, key="b", value=2))
    two.apply(cmd(1, Op.PUT, key="a", value=1))
    assert one.snapshot() == two.snapshot()


def test_applying_one_operation_twice_is_recorded() -> None:
    kv = KVStore()
    kv.apply(cmd(1, Op.PUT, value=1))
    kv.apply(cmd(1, Op.PUT, value=1))
    assert kv.duplicates == ((1, 1),)
