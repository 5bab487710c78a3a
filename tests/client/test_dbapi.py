"""The PEP 249 driver (``shardb.connect``) against ``ScriptedGateway`` over real TCP.

The driver blocks, so each test runs it in a worker thread (``trio.to_thread``) while the
double serves on the test's trio loop. Reference: PEP 249 (DB-API 2.0) and the SQL client
protocol.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

import shardb
from consensus.runtime import protocol as p
from shardb.client import wire

from .gateway import (
    CLOSE,
    HANG,
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

T = TypeVar("T")


async def blocking(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


async def three_rows(request: Request) -> Reply:
    if request.sql.upper().startswith("SELECT"):
        return rows(["id", "name"], [[1, "a"], [2, "b"], [3, "c"]])
    return written(2)


# --------------------------------------------------------------------------- module


def test_module_globals_follow_pep_249() -> None:
    """PEP 249 "Module Interface": apilevel, threadsafety, paramstyle, connect."""
    assert shardb.apilevel == "2.0"
    assert shardb.threadsafety == 1
    assert shardb.paramstyle == "qmark"
    assert callable(shardb.connect)


def test_the_exception_hierarchy_is_pep_249s() -> None:
    """PEP 249 "Exceptions": the inheritance layout."""
    assert issubclass(shardb.Warning, Exception)
    assert issubclass(shardb.Error, Exception)
    assert issubclass(shardb.InterfaceError, shardb.Error)
    assert issubclass(shardb.DatabaseError, shardb.Error)
    for name in (
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    ):
        assert issubclass(getattr(shardb, name), shardb.DatabaseError), name


def test_type_objects_and_constructors() -> None:
    """PEP 249 "Type Objects and Constructors"."""
    cases: list[tuple[object, object, bool]] = [
        (shardb.STRING, str, True),
        (shardb.BINARY, bytes, True),
        (shardb.NUMBER, int, True),
        (shardb.NUMBER, float, True),
        (shardb.NUMBER, str, False),
        (shardb.DATETIME, datetime.date, True),
        (shardb.ROWID, int, True),
        (shardb.STRING, None, False),  # the type code shardb's description carries
    ]
    for type_object, type_code, equal in cases:
        assert (type_object == type_code) is equal, (type_object, type_code)
    assert shardb.Binary(bytearray(b"ab")) == b"ab"
    assert shardb.Date(2026, 11, 22) == datetime.date(2026, 11, 22)
    assert shardb.Time(1, 2, 3) == datetime.time(1, 2, 3)
    assert shardb.Timestamp(2026, 1, 2, 3, 4, 5) == datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert isinstance(shardb.DateFromTicks(0), datetime.date)
    assert isinstance(shardb.TimeFromTicks(0), datetime.time)
    assert isinstance(shardb.TimestampFromTicks(0), datetime.datetime)


def test_the_client_parameter_limit_is_the_gateways() -> None:
    """More parameters than the gateway takes would close the connection (bad_request)."""
    from shardb.server.ops import MAX_PARAMS

    assert wire.MAX_PARAMS == MAX_PARAMS


# --------------------------------------------------------------------------- results


async def test_description_rowcount_and_fetch_after_a_select() -> None:
    """PEP 249 ``.description``: one 7-tuple per column, name first, rest None here."""
    async with scripted_gateways(ScriptedGateway(three_rows)) as (gw,):

        def run() -> tuple[Any, ...]:
            with shardb.connect(gw.address) as conn:
                cur = conn.cursor()
                cur.execute("SELECT id, name FROM t WHERE id > ?", [0])
                return cur.description, cur.rowcount, cur.fetchone(), cur.fetchall(), cur.lastrowid

        description, rowcount, first, rest, lastrowid = await blocking(run)
    assert description == (
        ("id", None, None, None, None, None, None),
        ("name", None, None, None, None, None, None),
    )
    assert rowcount == -1
    assert first == (1, "a")
    assert rest == [(2, "b"), (3, "c")]
    assert lastrowid is None
    assert gw.requests[0].args["params"] == [0]


async def test_a_write_has_rowcount_no_description_and_nothing_to_fetch() -> None:
    """PEP 249: ``.description`` is None for operations that return no rows, and a fetch
    after one raises an Error."""
    async with scripted_gateways(ScriptedGateway(three_rows)) as (gw,):

        def run() -> tuple[Any, ...]:
            with shardb.connect(gw.address) as conn:
                cur = conn.execute("UPDATE t SET name = ? WHERE id < 3", ("z",))
                with pytest.raises(shardb.ProgrammingError) as caught:
                    cur.fetchone()
                return cur.description, cur.rowcount, caught.value.code

        description, rowcount, code = await blocking(run)
    assert description is None
    assert rowcount == 2
    assert code == "no_result_set"


async def test_iterating_a_cursor_yields_its_rows() -> None:
    async with scripted_gateways(ScriptedGateway(three_rows)) as (gw,):

        def run() -> list[Any]:
            with shardb.connect(gw.address) as conn:
                return list(conn.cursor().execute("SELECT id, name FROM t"))

        assert await blocking(run) == [(1, "a"), (2, "b"), (3, "c")]


async def test_fetchmany_follows_arraysize() -> None:
    """PEP 249 ``.fetchmany``: ``size`` defaults to ``.arraysize`` (itself 1); fewer rows
    near the end, an empty list after it."""
    async with scripted_gateways(ScriptedGateway(three_rows)) as (gw,):

        def run() -> list[Any]:
            with shardb.connect(gw.address) as conn:
                cur = conn.execute("SELECT id, name FROM t")
                seen: list[Any] = [cur.arraysize, cur.fetchmany()]
                cur.arraysize = 5
                seen.append(cur.fetchmany())
                seen.append(cur.fetchmany())
                cur.execute("SELECT id, name FROM t")
                seen.append(cur.fetchmany(2))
                seen.append(cur.fetchone())
                seen.append(cur.fetchone())
                return seen

        default, one, rest, empty, two, third, after = await blocking(run)
    assert default == 1
    assert one == [(1, "a")]
    assert rest == [(2, "b"), (3, "c")]
    assert empty == []
    assert two == [(1, "a"), (2, "b")]
    assert third == (3, "c")
    assert after is None


@pytest.mark.parametrize("code", sorted(SPEC_ERROR_CLASSES))
async def test_each_error_code_raises_its_class_with_code_and_verbatim_message(
    code: str,
) -> None:
    """SQL client protocol "errors": the code decides the PEP 249 class."""
    message = f"UNIQUE constraint failed: t.id ({code}) \u2014 verbatim"

    async def script(request: Request) -> Reply:
        return error(code, message, statement=request.sql)

    async with scripted_gateways(ScriptedGateway(script)) as (gw,):

        def run() -> BaseException:
            with shardb.connect(gw.address, timeout=0.05) as conn:
                with pytest.raises(shardb.Error) as caught:
                    conn.execute("INSERT INTO t VALUES (1)")
                return caught.value

        raised = await blocking(run)
    assert isinstance(raised, shardb.Error)
    if code in ("overloaded", "unavailable"):
        # Retried until the deadline: then a timeout naming the last error.
        assert type(raised) is shardb.OperationalError
        assert raised.code == "timeout"
        assert message in str(raised)
        return
    assert type(raised) is SPEC_ERROR_CLASSES[code]
    assert raised.code == code
    assert str(raised) == message
    assert raised.details == {"statement": "INSERT INTO t VALUES (1)"}


# --------------------------------------------------------------------------- connection


async def test_connect_fails_over_to_the_second_address_when_the_first_refuses() -> None:
    with refusing_address() as dead:
        async with scripted_gateways(ScriptedGateway(three_rows, node_id=4)) as (gw,):

            def run() -> tuple[Any, ...]:
                with shardb.connect([dead, gw.address]) as conn:
                    return conn.node_id, conn.execute("SELECT id FROM t").fetchall()

            node_id, fetched = await blocking(run)
    assert node_id == 4
    assert len(fetched) == 3


async def test_connect_with_no_reachable_address_is_an_operational_error() -> None:
    with refusing_address() as dead:

        def run() -> BaseException:
            with pytest.raises(shardb.OperationalError) as caught:
                shardb.connect(f"{dead[0]}:{dead[1]}", timeout=5)
            return caught.value

        raised = await blocking(run)
    assert isinstance(raised, shardb.Error)
    assert raised.code == "unreachable"


async def test_a_write_in_flight_on_a_broken_connection_is_unknown_and_never_resent() -> None:
    """A request in flight when the connection breaks may have applied: the client raises
    ``unknown_outcome`` and does not send it again, here or to the other gateway."""

    async def dropping(request: Request) -> Reply:
        return CLOSE

    first, second = ScriptedGateway(dropping), ScriptedGateway()
    async with scripted_gateways(first, second):

        def run() -> BaseException:
            with shardb.connect([first.address, second.address]) as conn:
                with pytest.raises(shardb.OperationalError) as caught:
                    conn.execute("INSERT INTO t VALUES (1)")
                return caught.value

        raised = await blocking(run)
    assert isinstance(raised, shardb.Error)
    assert raised.code == "unknown_outcome"
    assert first.statements == ["INSERT INTO t VALUES (1)"]
    assert second.requests == []


async def test_a_read_in_flight_on_a_broken_connection_is_retried_on_the_next_gateway() -> None:
    async def dropping(request: Request) -> Reply:
        return CLOSE

    first, second = ScriptedGateway(dropping), ScriptedGateway(three_rows)
    async with scripted_gateways(first, second):

        def run() -> list[Any]:
            with shardb.connect([first.address, second.address]) as conn:
                return conn.execute("SELECT id, name FROM t").fetchall()

        fetched = await blocking(run)
    assert len(fetched) == 3
    assert len(first.requests) == 1
    assert len(second.requests) == 1


async def test_a_connection_closed_while_idle_is_redialed_before_a_write_is_sent() -> None:
    """Failover: a connection that broke before the request was written carried nothing,
    so the write goes out once, on a fresh connection, without an unknown outcome."""
    gw = ScriptedGateway(close_after_reply=True)
    async with scripted_gateways(gw):

        def connect_and_write() -> shardb.Connection:
            conn = shardb.connect(gw.address)
            conn.execute("INSERT INTO t VALUES (1)")
            return conn

        conn = await blocking(connect_and_write)
        # The double closes the connection right after its reply, which the client has
        # already read; wait until it has.
        with trio.fail_after(5):
            while gw.closed_connections < 1:
                await trio.sleep(0.001)

        def write_again() -> int:
            rowcount = conn.execute("INSERT INTO t VALUES (2)").rowcount
            conn.close()
            return rowcount

        assert await blocking(write_again) == 1
    assert gw.statements == ["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]
    assert [r.connection for r in gw.requests] == [1, 2]


async def test_an_oversized_request_is_refused_locally_and_nothing_is_sent() -> None:
    async with scripted_gateways(ScriptedGateway()) as (gw,):

        def run() -> tuple[BaseException, int]:
            with shardb.connect(gw.address) as conn:
                with pytest.raises(shardb.DataError) as caught:
                    conn.execute("INSERT INTO t VALUES (?)", [b"\x01" * p.MAX_REQUEST_BYTES])
                return caught.value, conn.execute("INSERT INTO t VALUES (1)").rowcount

        raised, rowcount = await blocking(run)
    assert isinstance(raised, shardb.Error)
    assert raised.code == "data_error"
    assert rowcount == 1
    assert gw.statements == ["INSERT INTO t VALUES (1)"]


async def test_a_request_without_a_reply_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shardb.client.wire.REPLY_GRACE_S", 0.0)

    async def hang(request: Request) -> Reply:
        return HANG

    async with scripted_gateways(ScriptedGateway(hang)) as (gw,):

        def run() -> BaseException:
            with shardb.connect(gw.address, timeout=0.1) as conn:
                with pytest.raises(shardb.OperationalError) as caught:
                    conn.execute("INSERT INTO t VALUES (1)")
                return caught.value

        raised = await blocking(run)
    assert isinstance(raised, shardb.Error)
    assert raised.code == "timeout"
    assert len(gw.requests) == 1


async def test_commit_is_a_no_op_and_rollback_is_not_supported() -> None:
    """Every statement autocommits: nothing to commit, nothing to roll back."""
    async with scripted_gateways(ScriptedGateway()) as (gw,):

        def run() -> BaseException:
            with shardb.connect(gw.address) as conn:
                conn.commit()
                with pytest.raises(shardb.NotSupportedError) as caught:
                    conn.rollback()
                return caught.value

        raised = await blocking(run)
    assert isinstance(raised, shardb.Error)
    assert gw.requests == []


async def test_closed_cursors_and_connections_raise_interface_error() -> None:
    """PEP 249 ``.close()``: later use of the object raises an Error."""
    async with scripted_gateways(ScriptedGateway(three_rows)) as (gw,):

        def run() -> list[str]:
            codes: list[str] = []
            conn = shardb.connect(gw.address)
            cur = conn.cursor()
            cur.execute("SELECT id, name FROM t")
            cur.close()
            cur.close()  # again: no error
            for action in (cur.fetchone, lambda: cur.execute("SELECT 1")):
                with pytest.raises(shardb.InterfaceError) as caught:
                    action()
                codes.append(caught.value.code)
            other = conn.cursor()
            with conn:
                pass  # leaving the block closes the connection
            assert conn.closed
            for action in (conn.cursor, conn.commit, lambda: other.execute("SELECT 1")):
                with pytest.raises(shardb.InterfaceError) as caught:
                    action()
                codes.append(caught.value.code)
            conn.close()  # again: no error
            return codes

        assert await blocking(run) == ["closed"] * 5


# --------------------------------------------------------------------------- executemany


async def test_executemany_sends_a_plain_insert_as_one_multi_row_request() -> None:
    async def count_rows(request: Request) -> Reply:
        return written(len(request.params) // 2)

    async with scripted_gateways(ScriptedGateway(count_rows)) as (gw,):

        def run() -> tuple[int, Any]:
            with shardb.connect(gw.address) as conn:
                cur = conn.cursor()
                cur.executemany(
                    "INSERT INTO t (id, v) VALUES (?, ?);", [(1, "a"), (2, "b"), (3, None)]
                )
                return cur.rowcount, cur.description

        rowcount, description = await blocking(run)
    assert rowcount == 3
    assert description is None
    (request,) = gw.requests
    assert request.sql == "INSERT INTO t (id, v) VALUES (?, ?), (?, ?), (?, ?)"
    assert request.params == [1, "a", 2, "b", 3, None]


async def test_executemany_batches_stay_within_the_parameter_limit_and_keep_order() -> None:
    width = 20
    count = 1200

    async def count_rows(request: Request) -> Reply:
        return written(len(request.params) // width)

    async with scripted_gateways(ScriptedGateway(count_rows)) as (gw,):
        sql = f"INSERT INTO t VALUES ({', '.join('?' * width)})"
        data = [[row * width + col for col in range(width)] for row in range(count)]

        def run() -> int:
            with shardb.connect(gw.address) as conn:
                cur = conn.cursor()
                cur.executemany(sql, data)
                return cur.rowcount

        assert await blocking(run) == count
    assert len(gw.requests) > 1
    assert all(len(r.params) <= wire.MAX_PARAMS for r in gw.requests)
    assert [v for r in gw.requests for v in r.params] == list(range(count * width))


async def test_executemany_runs_other_statements_once_per_row() -> None:
    async with scripted_gateways(ScriptedGateway(three_rows)) as (gw,):

        def run() -> int:
            with shardb.connect(gw.address) as conn:
                cur = conn.cursor()
                cur.executemany("UPDATE t SET v = ? WHERE id = ?", [("a", 1), ("b", 2)])
                return cur.rowcount

        assert await blocking(run) == 4  # the double says 2 rows each
    assert [r.params for r in gw.requests] == [["a", 1], ["b", 2]]


# --------------------------------------------------------------------------- parameters


async def test_parameters_are_converted_or_refused_before_sending() -> None:
    async with scripted_gateways(ScriptedGateway()) as (gw,):

        def run() -> list[str]:
            codes: list[str] = []
            with shardb.connect(gw.address) as conn:
                conn.execute(
                    "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                    (True, bytearray(b"x"), datetime.date(2026, 11, 22), 1.5, None),
                )
                for params in ((object(),), "abc", (1 << 64,)):
                    with pytest.raises(shardb.DatabaseError) as caught:
                        conn.execute("INSERT INTO t VALUES (?)", params)
                    codes.append(caught.value.code)
            return codes

        assert await blocking(run) == ["parameter_error", "parameter_error", "data_error"]
    (request,) = gw.requests
    assert request.params == [1, b"x", "2026-11-22", 1.5, None]


async def test_consistency_and_trace_are_sent_with_each_statement() -> None:
    async def traced(request: Request) -> Reply:
        return {"result": {**written(1)["result"], "trace": {"route": "point"}}}

    async with scripted_gateways(ScriptedGateway(traced)) as (gw,):

        def run() -> Any:
            with shardb.connect(gw.address, consistency="lease", trace=True) as conn:
                cur = conn.execute("SELECT 1")
                conn.consistency = "stale"
                conn.execute("SELECT 1")
                with pytest.raises(shardb.ProgrammingError):
                    conn.consistency = "strong"
                return cur.trace

        assert await blocking(run) == {"route": "point"}
    assert [r.args["consistency"] for r in gw.requests] == ["lease", "stale"]
    assert all(r.args["trace"] is True for r in gw.requests)
