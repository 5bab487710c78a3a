"""The async client (``shardb.client.aio``) against ``ScriptedGateway`` over real TCP.

Reference: the SQL client protocol (op ``sql``, op ``meta``, error codes) on top of the node
client protocol (``consensus.runtime.protocol``).
"""

from __future__ import annotations

import pytest
import trio

from consensus.runtime import protocol as p
from shardb.client import aio
from shardb.client.errors import (
    DataError,
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from .gateway import (
    CLOSE,
    HANG,
    Raw,
    Reply,
    Request,
    ScriptedGateway,
    error,
    refusing_address,
    rows,
    scripted_gateways,
    written,
)
from .spec import SPEC_ERROR_CLASSES

pytestmark = pytest.mark.timeout(30)


async def wait_until_broken(conn: aio.AsyncConnection) -> None:
    """The client notices a closed connection when its read loop sees EOF; wait for that
    (bounded) so a test's next request is deterministically 'not yet sent'."""
    with trio.fail_after(5):
        while conn.gateway is not None:
            await trio.sleep(0.001)


async def test_a_select_result_is_decoded_and_the_request_carries_the_protocol_args() -> None:
    """op ``sql``: args sql/params/consistency/timeout_ms; result kind/columns/rows/rowcount."""

    async def script(request: Request) -> Reply:
        return rows(["id", "v"], [[1, "a"], [2, None], [3, b"\x00"]])

    async with (
        scripted_gateways(ScriptedGateway(script)) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):
        result = await conn.execute("SELECT id, v FROM t WHERE id > ?", (0,))
    assert result.kind == "select"
    assert result.columns == ("id", "v")
    assert result.rows == ((1, "a"), (2, None), (3, b"\x00"))
    assert result.rowcount == -1
    assert result.trace is None
    (request,) = gw.requests
    assert request.op == "sql"
    assert request.args["sql"] == "SELECT id, v FROM t WHERE id > ?"
    assert request.args["params"] == [0]
    assert request.args["consistency"] == "linearizable"
    assert 0 < request.args["timeout_ms"] <= 10_000
    assert "trace" not in request.args


async def test_trace_is_requested_and_returned_when_enabled() -> None:
    trace = {"route": "point", "ranges": [1], "groups": [2], "leaders": [3], "retries": 0}

    async def script(request: Request) -> Reply:
        return {"result": {**written(1)["result"], "trace": trace}}

    async with (
        scripted_gateways(ScriptedGateway(script)) as (gw,),
        aio.open_connection(gw.address, trace=True) as conn,
    ):
        result = await conn.execute("INSERT INTO t VALUES (1)")
    assert gw.requests[0].args["trace"] is True
    assert result.trace == trace
    assert result.rowcount == 1


async def test_every_protocol_error_code_raises_its_dbapi_class_with_code_and_message() -> None:
    """Errors: each code maps to the PEP 249 class the protocol names; the message is the
    server's, verbatim, and detail fields are kept."""

    async def script(request: Request) -> Reply:
        code = request.sql
        return error(code, f"message for {code}: 'quoted' \u00e9", statement="S")

    async with (
        scripted_gateways(ScriptedGateway(script)) as (gw,),
        aio.open_connection(gw.address, timeout=5) as conn,
    ):
        for code, cls in sorted(SPEC_ERROR_CLASSES.items()):
            if code in ("bad_request", "overloaded", "unavailable"):
                continue  # closes the connection / retried: tested on their own
            with pytest.raises(Error) as caught:
                await conn.execute(code)
            assert type(caught.value) is cls, code
            assert caught.value.code == code
            assert str(caught.value) == f"message for {code}: 'quoted' \u00e9"
            assert caught.value.details == {"statement": "S"}


async def test_first_address_refusing_fails_over_to_the_second() -> None:
    """Failover: an address that refuses connections carried nothing; the next is used."""
    with refusing_address() as dead:
        async with (
            scripted_gateways(ScriptedGateway(node_id=2)) as (gw,),
            aio.open_connection([dead, f"{gw.address[0]}:{gw.address[1]}"]) as conn,
        ):
            assert conn.gateway == gw.address
            assert conn.node_id == 2
            result = await conn.execute("INSERT INTO t VALUES (1)")
    assert result.rowcount == 1
    assert gw.statements == ["INSERT INTO t VALUES (1)"]


async def test_no_address_reachable_raises_unreachable() -> None:
    with (
        refusing_address() as first,
        refusing_address() as second,
        pytest.raises(OperationalError) as caught,
    ):
        async with aio.open_connection([first, second], timeout=5):
            pass
    assert caught.value.code == "unreachable"


async def test_a_write_in_flight_on_a_broken_connection_is_unknown_and_never_resent() -> None:
    """A request in flight when the connection breaks may have applied: the client raises
    ``unknown_outcome`` and does not send it to the other gateway."""

    async def dropping(request: Request) -> Reply:
        return CLOSE

    first, second = ScriptedGateway(dropping), ScriptedGateway()
    async with (
        scripted_gateways(first, second),
        aio.open_connection([first.address, second.address]) as conn,
    ):
        with pytest.raises(OperationalError) as caught:
            await conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    assert caught.value.code == "unknown_outcome"
    assert first.statements == ["UPDATE t SET v = v + 1 WHERE id = 1"]
    assert second.requests == []


async def test_a_read_in_flight_on_a_broken_connection_is_retried_on_the_next_gateway() -> None:
    async def dropping(request: Request) -> Reply:
        return CLOSE

    async def answering(request: Request) -> Reply:
        return rows(["n"], [[7]])

    first, second = ScriptedGateway(dropping), ScriptedGateway(answering)
    async with (
        scripted_gateways(first, second),
        aio.open_connection([first.address, second.address]) as conn,
    ):
        result = await conn.execute("  /* hint */ SELECT count(*) AS n FROM t")
        assert conn.gateway == second.address
    assert result.rows == ((7,),)
    assert len(first.requests) == 1
    assert len(second.requests) == 1


async def test_a_write_after_the_gateway_went_away_goes_to_the_next_one_once() -> None:
    """Failover: a connection that broke before the request was sent carried nothing."""
    first, second = ScriptedGateway(node_id=1), ScriptedGateway(node_id=2)
    async with (
        scripted_gateways(first, second),
        aio.open_connection([first.address, second.address]) as conn,
    ):
        await conn.execute("INSERT INTO t VALUES (1)")
        first.stop()
        await wait_until_broken(conn)
        result = await conn.execute("INSERT INTO t VALUES (2)")
        assert conn.node_id == 2
    assert result.rowcount == 1
    assert first.statements == ["INSERT INTO t VALUES (1)"]
    assert second.statements == ["INSERT INTO t VALUES (2)"]


async def test_retryable_errors_are_retried_on_the_next_gateway() -> None:
    """Errors: ``overloaded`` (like not_leader, dropped, unavailable) applied nothing."""

    async def overloaded(request: Request) -> Reply:
        return error("overloaded", "busy")

    first, second = ScriptedGateway(overloaded), ScriptedGateway()
    async with (
        scripted_gateways(first, second),
        aio.open_connection([first.address, second.address]) as conn,
    ):
        result = await conn.execute("INSERT INTO t VALUES (1)")
    assert result.rowcount == 1
    assert len(first.requests) == 1
    assert len(second.requests) == 1


async def test_a_retryable_error_until_the_deadline_raises_timeout_naming_it() -> None:
    async def unavailable(request: Request) -> Reply:
        return error("unavailable", "no leader for range 4")

    async with (
        scripted_gateways(ScriptedGateway(unavailable)) as (gw,),
        aio.open_connection(gw.address, timeout=0.2) as conn,
    ):
        with pytest.raises(OperationalError) as caught:
            await conn.execute("INSERT INTO t VALUES (1)")
    assert caught.value.code == "timeout"
    assert "no leader for range 4" in str(caught.value)
    assert len(gw.requests) >= 2


async def test_an_oversized_request_is_refused_locally() -> None:
    """Bounded: a request over ``MAX_REQUEST_BYTES`` would make the node close the
    connection; the client refuses it with ``DataError`` and the connection stays usable."""
    async with (
        scripted_gateways(ScriptedGateway()) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):
        with pytest.raises(DataError) as caught:
            await conn.execute("INSERT INTO t VALUES (?)", (b"x" * p.MAX_REQUEST_BYTES,))
        assert caught.value.code == "data_error"
        assert str(p.MAX_REQUEST_BYTES) in str(caught.value)
        assert gw.requests == []
        assert (await conn.execute("INSERT INTO t VALUES (1)")).rowcount == 1


async def test_concurrent_executes_share_one_connection_and_get_their_own_replies() -> None:
    """Requests are multiplexed by id: replies in any order reach the right caller."""
    count = 20
    arrived = trio.Event()
    answered = [trio.Event() for _ in range(count + 1)]
    answered[count].set()
    seen = 0

    async def echo_in_reverse(request: Request) -> Reply:
        nonlocal seen
        seen += 1
        if seen == count:
            arrived.set()
        await arrived.wait()  # every request is in flight at once
        value = request.params[0]
        await answered[value + 1].wait()  # the highest value answers first
        answered[value].set()
        return rows(["v"], [[value]])

    results: dict[int, object] = {}
    async with (
        scripted_gateways(ScriptedGateway(echo_in_reverse)) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):

        async def one(value: int) -> None:
            results[value] = (await conn.execute("SELECT ?", (value,))).rows

        async with trio.open_nursery() as nursery:
            for value in range(count):
                nursery.start_soon(one, value)
    assert results == {value: ((value,),) for value in range(count)}
    assert gw.connections == 1
    assert len({r.id for r in gw.requests}) == count


async def test_a_closed_connection_refuses_statements() -> None:
    async with scripted_gateways(ScriptedGateway()) as (gw,):
        async with aio.open_connection(gw.address) as conn:
            pass
        assert conn.closed
        with pytest.raises(InterfaceError) as caught:
            await conn.execute("SELECT 1")
    assert caught.value.code == "closed"


async def test_executescript_runs_statements_in_order_and_stops_at_the_first_error() -> None:
    async def script(request: Request) -> Reply:
        if "bad" in request.sql:
            return error("syntax_error", "near 'bad'", statement=request.sql)
        return written(1)

    async with (
        scripted_gateways(ScriptedGateway(script)) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):
        results = await conn.executescript("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
        assert [r.rowcount for r in results] == [1, 1]
        with pytest.raises(ProgrammingError):
            await conn.executescript(
                "INSERT INTO t VALUES (3);\nbad statement;\nINSERT INTO t VALUES (4)"
            )
    assert gw.statements == [
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (2)",
        "INSERT INTO t VALUES (3)",
        "bad statement",
    ]


async def test_consistency_is_settable_and_checked() -> None:
    async with (
        scripted_gateways(ScriptedGateway()) as (gw,),
        aio.open_connection(gw.address, consistency="lease") as conn,
    ):
        await conn.execute("SELECT 1")
        conn.consistency = "stale"
        conn.max_staleness_ms = 250
        await conn.execute("SELECT 1")
        with pytest.raises(ProgrammingError):
            conn.consistency = "eventual"
    assert [r.args["consistency"] for r in gw.requests] == ["lease", "stale"]
    assert gw.requests[1].args["max_staleness_ms"] == 250


async def test_meta_returns_the_cluster_view() -> None:
    view = {
        "nodes": [{"node_id": 1, "address": "127.0.0.1:1", "alive": True}],
        "ranges": [],
        "tables": [{"name": "t", "schema_sql": "CREATE TABLE t (id INTEGER PRIMARY KEY)"}],
    }

    async def script(request: Request) -> Reply:
        return {"result": view}

    async with (
        scripted_gateways(ScriptedGateway(script)) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):
        assert await conn.meta() == view
    assert gw.ops == ["meta"]


async def test_a_malformed_result_is_an_interface_error() -> None:
    async def script(request: Request) -> Reply:
        return rows(["a", "b"], [[1]])  # one value for two columns

    async with (
        scripted_gateways(ScriptedGateway(script)) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):
        with pytest.raises(InterfaceError) as caught:
            await conn.execute("SELECT a, b FROM t")
    assert caught.value.code == "bad_reply"


async def test_a_refused_hello_is_an_interface_error_with_the_servers_message() -> None:
    """A node that does not speak our version answers the hello with ``bad_request``."""
    refusal = {"id": None, "ok": False, "error": {"code": "bad_request", "message": "v9 only"}}
    async with scripted_gateways(ScriptedGateway(hello=refusal)) as (gw,):
        with pytest.raises(InterfaceError) as caught:
            async with aio.open_connection(gw.address):
                pass
    assert caught.value.code == "bad_request"
    assert str(caught.value) == "v9 only"


async def test_a_server_closing_on_bad_request_makes_a_write_unknown_and_a_read_fail() -> None:
    """``bad_request``: the server replies with id None and closes the connection."""

    async def refuse(request: Request) -> Reply:
        body = {"code": "bad_request", "message": "unknown op 'sql'"}
        return Raw({"id": None, "ok": False, "error": body}, close_after=True)

    async with (
        scripted_gateways(ScriptedGateway(refuse)) as (gw,),
        aio.open_connection(gw.address) as conn,
    ):
        with pytest.raises(OperationalError) as write:
            await conn.execute("DELETE FROM t WHERE id = 1")
        with pytest.raises(InterfaceError) as read:
            await conn.execute("SELECT * FROM t")
    assert write.value.code == "unknown_outcome"
    assert "unknown op 'sql'" in str(write.value)
    assert read.value.code == "bad_request"
    assert str(read.value) == "unknown op 'sql'"
    assert len(gw.requests) == 2


async def test_failover_refuses_a_gateway_of_another_cluster() -> None:
    first = ScriptedGateway(cluster_id="alpha")
    other = ScriptedGateway(cluster_id="beta")
    async with (
        scripted_gateways(first, other),
        aio.open_connection([first.address, other.address]) as conn,
    ):
        first.stop()
        await wait_until_broken(conn)
        with pytest.raises(OperationalError) as caught:
            await conn.execute("INSERT INTO t VALUES (1)")
    assert caught.value.code == "unreachable"
    assert "beta" in str(caught.value)
    assert other.requests == []


async def test_a_request_without_a_reply_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shardb.client.wire.REPLY_GRACE_S", 0.0)

    async def hang(request: Request) -> Reply:
        return HANG

    async with (
        scripted_gateways(ScriptedGateway(hang)) as (gw,),
        aio.open_connection(gw.address, timeout=0.1) as conn,
    ):
        with pytest.raises(OperationalError) as caught:
            await conn.execute("INSERT INTO t VALUES (1)")
    assert caught.value.code == "timeout"
    assert len(gw.requests) == 1


async def test_an_exception_in_the_block_propagates_unwrapped() -> None:
    async with scripted_gateways(ScriptedGateway()) as (gw,):
        with pytest.raises(KeyError):
            async with aio.open_connection(gw.address):
                raise KeyError("mine")
