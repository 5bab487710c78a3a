"""The client/admin endpoint and the client, over real TCP, against in-process nodes."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from consensus.runtime import ClientError, open_client, open_client_server
from consensus.runtime import protocol as p

from .helpers import MemoryCluster, memory_cluster

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def served_cluster(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[MemoryCluster, dict[int, tuple[str, int]]]]:
    async with memory_cluster(tmp_path, **overrides) as cluster, AsyncExitStack() as stack:
        addresses = {
            node_id: await stack.enter_async_context(open_client_server(node))
            for node_id, node in sorted(cluster.nodes.items())
        }
        yield cluster, addresses


async def raw_exchange(address: tuple[str, int], payload: bytes) -> list[Any]:
    """Send raw bytes, return every object the server sent until it closed."""
    stream = await trio.open_tcp_stream(*address)
    replies: list[Any] = []
    unpacker = msgpack.Unpacker(raw=False)

    async def send() -> None:
        # The server may stop reading mid-request (oversized): a reset is fine here.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(payload)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        with trio.fail_after(10):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                unpacker.feed(data)
                replies.extend(unpacker)
    return replies


HELLO = p.pack({"hello": p.PROTOCOL_NAME, "version": p.CLIENT_PROTOCOL_VERSION})


async def test_client_follows_not_leader_hints_and_runs_every_operation(tmp_path: Path) -> None:
    async with served_cluster(tmp_path) as (cluster, addresses):
        await cluster.create_group(1, "raft")
        await cluster.create_group(2, "paxos")
        leader = await cluster.wait_leader(1)
        follower = next(n for n in (1, 2, 3) if n != int(leader.node_id))
        # Start the client at a follower only: it must learn the leader from the hint.
        async with open_client(addresses) as client:
            client._leaders[1] = follower
            await client.put(1, "k", "v1")
            assert client._leaders[1] == int(leader.node_id)
            assert await client.get(1, "k") == b"v1"
            assert await client.get(1, "k", consistency="lease") == b"v1"
            assert await client.cas(1, "k", "nope", "x") == (False, b"v1")
            assert await client.cas(1, "k", "v1", "v2") == (True, b"v2")
            assert await client.delete(1, "k") is True
            assert await client.get(1, "k") is None
            await client.put(2, b"p", b"q")
            assert await client.get(2, b"p") == b"q"
            await client.create_group(3, "paxos", [1, 2, 3])  # admin op on every member
            await client.put(3, "new", "group")
            status = await client.status(follower)
            assert status["node_id"] == follower
            assert {g["group"] for g in status["groups"]} == {1, 2, 3}
            assert {g["backend"] for g in status["groups"]} == {"raft", "paxos"}
            stats = await client.stats(int(leader.node_id))
            assert stats["node"]["proposals"] >= 4 and stats["node"]["fsyncs"] > 0
            with pytest.raises(ClientError) as info:
                await client.call(follower, "put", {"group": 77, "key": b"k", "value": b"v"})
            assert info.value.code == p.UNKNOWN_GROUP


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        (b"\xc1\xc1\xc1", "malformed msgpack"),
        (p.pack({"hello": "shardb", "version": 99}), "version"),
        (HELLO + p.pack([1, 2, 3]), "a request is a map"),
        (HELLO + p.pack({"id": "x", "op": "put"}), "request id"),
        (HELLO + p.pack({"id": 1, "op": "drop_table"}), "unknown op"),
        (HELLO + p.pack({"id": 1, "op": "put", "args": {"group": 1, "key": "str"}}), "key"),
        (HELLO + p.pack({"id": 1, "op": "get", "args": {"key": b"k" * (2 << 20)}}), "larger"),
    ],
    ids=["garbage", "version", "not-a-map", "bad-id", "unknown-op", "bad-args", "oversized"],
)
async def test_malformed_requests_get_an_error_and_the_connection_closes(
    tmp_path: Path, payload: bytes, expect: str
) -> None:
    """Nothing a client sends crashes the node: one error reply, then the connection closes,
    and the node keeps serving others."""
    async with served_cluster(tmp_path, nodes=(1,)) as (cluster, addresses):
        await cluster.nodes[1].create_group(1, "raft", [1])  # type: ignore[arg-type]
        replies = await raw_exchange(addresses[1], payload)
        errors = [r for r in replies if isinstance(r, dict) and r.get("ok") is False]
        assert errors, replies
        body = errors[-1]["error"]
        assert expect in body["message"]
        async with open_client({1: addresses[1]}) as client:
            await client.put(1, "still", "serving")
            assert await client.get(1, "still") == b"serving"


async def test_requests_on_one_connection_are_multiplexed(tmp_path: Path) -> None:
    """Many concurrent requests share one connection and one fsync per loop."""
    async with served_cluster(tmp_path, nodes=(1,)) as (cluster, addresses):
        await cluster.nodes[1].create_group(1, "paxos", [1])  # type: ignore[arg-type]
        async with open_client({1: addresses[1]}) as client:
            await client.put(1, "warm", "up")
            before = cluster.nodes[1].statistics().batches_persisted

            async def writer(i: int) -> None:
                await client.put(1, f"k{i}", f"v{i}")

            async with trio.open_nursery() as nursery:
                for i in range(64):
                    nursery.start_soon(writer, i)
            batches = cluster.nodes[1].statistics().batches_persisted - before
            assert batches < 64, "writes were batched into shared transactions"
            for i in (0, 31, 63):
                assert await client.get(1, f"k{i}") == f"v{i}".encode()


async def test_raw_propose_and_read_carry_application_bytes_to_the_group(tmp_path: Path) -> None:
    """``propose``/``read`` are how one node's gateway reaches a group led by another node:
    the command and query bytes pass through untouched, and so does the state machine's
    answer."""
    from consensus.runtime.statemachine import decode_result, encode_get, encode_put

    async with served_cluster(tmp_path) as (cluster, addresses):
        await cluster.create_group(1, "paxos")
        await cluster.wait_leader(1)
        async with open_client(addresses) as client:
            put = await client.request("propose", 1, {"command": encode_put(b"k", b"v")})
            assert decode_result(put["result"])["ok"] is True
            got = await client.request(
                "read", 1, {"query": encode_get(b"k"), "consistency": "lease"}
            )
            assert decode_result(got["result"])["value"] == b"v"


async def test_application_ops_are_served_and_their_errors_keep_code_and_details(
    tmp_path: Path,
) -> None:
    """An application op (the SQL gateway's) runs beside the node's own ops; its
    ``ApplicationError`` reaches the client with the code and every detail field."""
    from consensus.runtime.errors import ApplicationError
    from consensus.runtime.server import arg

    def echo(args: dict[str, Any]) -> Any:
        text = arg(args, "text", str)

        async def run() -> dict[str, Any]:
            if text == "fail":
                raise ApplicationError("sql_error", "no such table: t", statement="SELECT 1")
            return {"echo": text}

        return run

    async with (
        memory_cluster(tmp_path) as cluster,
        open_client_server(cluster.nodes[1], ops={"echo": echo}) as address,
        open_client({1: address}) as client,
    ):
        assert await client.call(1, "echo", {"text": "hi"}) == {"echo": "hi"}
        with pytest.raises(ClientError) as failed:
            await client.call(1, "echo", {"text": "fail"})
        assert failed.value.code == "sql_error"
        assert failed.value.message == "no such table: t"
        assert failed.value.details == {"statement": "SELECT 1"}
        assert await client.status(1)  # the node's own ops still answer


async def test_a_client_resetting_mid_reply_ends_only_its_connection(tmp_path: Path) -> None:
    """A peer that resets the connection while replies are being written (an abortive close,
    RST) must not take the node down: the error surfaces inside the connection's nursery as an
    exception group, and it ends that connection only."""
    import socket

    async with served_cluster(tmp_path) as (cluster, addresses):
        await cluster.create_group(1, "raft")
        await cluster.wait_leader(1)
        for _ in range(20):
            stream = await trio.open_tcp_stream(*addresses[1])
            await stream.send_all(HELLO)
            requests = b"".join(p.pack({"id": i, "op": "status", "args": {}}) for i in range(200))
            await stream.send_all(requests)
            # SO_LINGER 0: close() sends a reset instead of a FIN.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        async with open_client(addresses) as client:
            await client.put(1, "k", "still serving")
            assert await client.get(1, "k") == b"still serving"
