"""The shardb SQLAlchemy dialect against a real cluster: three node processes on 127.0.0.1.

One cluster serves the whole module (starting one takes seconds); each test uses its own
tables. SQLAlchemy is synchronous, so these are plain tests: the DB-API driver underneath
uses blocking sockets.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import apsw
import pytest
import trio
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    exc,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)

from consensus.runtime.localhost import free_ports
from shardb.cluster import LocalCluster, wait_ready
from shardb.sqlalchemy import RollbackWarning, ShardbConnection, ShardbDialect

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster.create(tmp_path_factory.mktemp("sqla") / "cluster", 3)
    try:
        cluster.start_all()
        trio.run(wait_ready, cluster)
        yield cluster
    finally:
        cluster.stop()


def url_of(cluster: LocalCluster, node: int = 0) -> str:
    return f"shardb://{cluster.address_list[node]}"


@pytest.fixture(scope="module")
def engine(cluster: LocalCluster) -> Iterator[Engine]:
    engine = create_engine(url_of(cluster))
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> list[str]:
    return inspect(engine).get_table_names()


# --------------------------------------------------------------------------- connecting


def test_create_engine_finds_the_dialect_by_its_entry_point(engine: Engine) -> None:
    """``shardb://`` resolves through the ``sqlalchemy.dialects`` entry point, and the server
    version is the cluster's SQLite (the gateway answers ``SELECT sqlite_version()``)."""
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT sqlite_version()").scalar() == apsw.sqlite_lib_version()
    assert isinstance(engine.dialect, ShardbDialect)
    assert engine.dialect.name == "shardb"
    expected = tuple(int(p) for p in apsw.sqlite_lib_version().split("."))
    assert engine.dialect.server_version_info == expected


def test_the_url_lists_several_gateways_and_driver_options(cluster: LocalCluster) -> None:
    """A dead first gateway is skipped for the next one given as ``host=``."""
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    engine = create_engine(
        f"shardb://{dead}?host={cluster.address_list[1]}&consistency=lease",
        pool_pre_ping=True,
    )
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("PRAGMA database_list").all()
            assert [tuple(r) for r in rows] == [(0, "main", "")]
            driver = conn.connection.dbapi_connection
            assert isinstance(driver, ShardbConnection)
            assert driver.consistency == "lease"
            assert driver.gateway == ("127.0.0.1", cluster.layout.nodes[1].client_port)
            assert engine.dialect.do_ping(driver)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- Core


def test_create_all_and_core_insert_select_update_delete(engine: Engine) -> None:
    metadata = MetaData()
    events = Table(
        "core_events",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("kind", String(20), nullable=False),
        Column("weight", Float),
        Column("at", DateTime),
        Column("done", Boolean, default=False),
    )
    metadata.create_all(engine)
    assert "core_events" in table_names(engine)
    at = datetime.datetime(2026, 11, 22, 10, 30, 15, 250_000)
    with engine.begin() as conn:
        result = conn.execute(
            insert(events),
            [{"id": i, "kind": f"k{i % 3}", "weight": i / 4, "at": at} for i in range(30)],
        )
        assert result.rowcount == 30
    with engine.begin() as conn:
        rows = conn.execute(
            select(events.c.id, events.c.kind, events.c.at, events.c.done)
            .where(events.c.id >= 27)
            .order_by(events.c.id)
        ).all()
        assert [tuple(r) for r in rows] == [
            (27, "k0", at, False),
            (28, "k1", at, False),
            (29, "k2", at, False),
        ]
        changed = conn.execute(update(events).where(events.c.kind == "k1").values(done=True))
        assert changed.rowcount == 10
        removed = conn.execute(delete(events).where(events.c.id < 5))
        assert removed.rowcount == 5
        counts = conn.execute(
            select(events.c.done, func.count())
            .where(events.c.id >= 5)
            .group_by(events.c.done)
            .order_by(events.c.done)
        ).all()
        assert [tuple(r) for r in counts] == [(False, 17), (True, 8)]
        page = conn.execute(select(events.c.id).order_by(events.c.id.desc()).limit(3).offset(2))
        assert page.scalars().all() == [27, 26, 25]
        assert conn.execute(select(events.c.weight).where(events.c.id == 6)).scalar() == 1.5
    metadata.drop_all(engine)
    assert "core_events" not in table_names(engine)


# --------------------------------------------------------------------------- reflection


def test_reflection_reports_tables_columns_indexes_and_the_key(engine: Engine) -> None:
    metadata = MetaData()
    Table(
        "refl_people",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(40), nullable=False),
        Column("height", Float),
        Column("active", Boolean),
        Column("born", DateTime),
        Column("photo", LargeBinary),
        Column("notes", Text),
        Index("ix_refl_people_name", "name"),
        Index("ix_refl_people_born_height", "born", "height"),
    )
    metadata.create_all(engine)
    inspector = inspect(engine)
    assert "refl_people" in inspector.get_table_names()
    assert inspector.has_table("refl_people")
    assert not inspector.has_table("refl_nobody")
    columns = inspector.get_columns("refl_people")
    assert [(c["name"], str(c["type"]), c["nullable"]) for c in columns] == [
        ("id", "INTEGER", False),
        ("name", "VARCHAR(40)", False),
        ("height", "FLOAT", True),
        ("active", "BOOLEAN", True),
        ("born", "DATETIME", True),
        ("photo", "BLOB", True),
        ("notes", "TEXT", True),
    ]
    assert inspector.get_pk_constraint("refl_people")["constrained_columns"] == ["id"]
    assert inspector.get_indexes("refl_people") == [
        {
            "name": "ix_refl_people_born_height",
            "column_names": ["born", "height"],
            "unique": 0,
            "dialect_options": {},
        },
        {
            "name": "ix_refl_people_name",
            "column_names": ["name"],
            "unique": 0,
            "dialect_options": {},
        },
    ]
    assert inspector.get_foreign_keys("refl_people") == []
    reflected = Table("refl_people", MetaData(), autoload_with=engine)
    assert [c.name for c in reflected.primary_key.columns] == ["id"]
    assert sorted(i.name or "" for i in reflected.indexes) == [
        "ix_refl_people_born_height",
        "ix_refl_people_name",
    ]


def test_reflection_through_another_gateway_sees_ddl_acknowledged_before(
    cluster: LocalCluster, engine: Engine
) -> None:
    """Catalog queries are linearizable by default: the gateway reads the meta group before
    answering, so a table created through node 1 is visible at once through node 3."""
    other = create_engine(url_of(cluster, 2))
    try:
        assert "refl_fresh" not in table_names(other)
        Table("refl_fresh", MetaData(), Column("id", Integer, primary_key=True)).create(engine)
        assert "refl_fresh" in table_names(other)
        assert [c["name"] for c in inspect(other).get_columns("refl_fresh")] == ["id"]
    finally:
        other.dispose()


def test_shardb_table_options_create_the_ranges_and_backend_asked_for(engine: Engine) -> None:
    Table(
        "opt_split",
        MetaData(),
        Column("id", Integer, primary_key=True),
        shardb_shards=3,
        shardb_backend="paxos",
    ).create(engine)
    with engine.connect() as conn:
        ranges = conn.exec_driver_sql(
            "SELECT backend FROM shardb_ranges WHERE table_name = ?", ("opt_split",)
        ).all()
    assert [tuple(r) for r in ranges] == [("paxos",)] * 3


# --------------------------------------------------------------------------- ORM


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "orm_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # No ForeignKey (refused: the rows live in other ranges); the join condition says which
    # column refers to which, and lazy loading runs one single-table SELECT.
    books: Mapped[list[Book]] = relationship(
        primaryjoin="Author.id == foreign(Book.author_id)", order_by="Book.isbn"
    )


class Book(Base):
    __tablename__ = "orm_books"
    isbn: Mapped[str] = mapped_column(String(17), primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int]


def test_orm_session_add_query_update_delete_round_trip(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Author(id=1, name="Ada"))
        session.add_all(
            [
                Book(isbn="978-0-00-000001-1", title="Notes", author_id=1),
                Book(isbn="978-0-00-000002-2", title="Engines", author_id=1),
                Book(isbn="978-0-00-000003-3", title="Orphan", author_id=99),
            ]
        )
        session.commit()
    with Session(engine) as session:
        ada = session.get(Author, 1)
        assert ada is not None
        assert [b.title for b in ada.books] == ["Notes", "Engines"]
        ada.name = "Ada Lovelace"
        ada.books[1].title = "Analytical Engines"
        orphan = session.get(Book, "978-0-00-000003-3")
        assert orphan is not None
        session.delete(orphan)
        session.commit()
    with Session(engine) as session:
        assert session.scalars(select(Author.name)).all() == ["Ada Lovelace"]
        titles = session.scalars(select(Book.title).order_by(Book.title)).all()
        assert titles == ["Analytical Engines", "Notes"]
        assert session.scalar(select(func.count()).select_from(Book)) == 2
        found = session.scalars(select(Book).where(Book.title.like("Note%"))).one()
        assert found.isbn == "978-0-00-000001-1"
    isbn = inspect(engine).get_columns("orm_books")[0]
    assert (isbn["name"], str(isbn["type"])) == ("isbn", "TEXT")


# --------------------------------------------------------------------------- transactions


def test_commit_and_a_rollback_with_nothing_written_are_no_ops(engine: Engine) -> None:
    table = Table("tx_quiet", MetaData(), Column("id", Integer, primary_key=True))
    table.create(engine)
    with engine.connect() as conn:
        conn.execute(insert(table).values(id=1))
        conn.commit()
        assert conn.execute(select(table.c.id)).scalars().all() == [1]
        conn.rollback()  # only a read since the commit: nothing to undo
    # The failing statement applied nothing, so the rollback around it is a no-op and the
    # error reaches the caller as itself.
    with (
        pytest.raises(exc.IntegrityError, match="UNIQUE constraint failed"),
        engine.begin() as conn,
    ):
        conn.execute(insert(table).values(id=1))


def test_rollback_after_writes_is_refused_and_says_what_applied(engine: Engine) -> None:
    """Every statement autocommits; a rollback that should undo writes cannot, and says so
    instead of pretending."""
    table = Table("tx_loud", MetaData(), Column("id", Integer, primary_key=True))
    table.create(engine)
    with engine.connect() as conn:
        conn.execute(insert(table).values(id=7))
        with pytest.raises(exc.NotSupportedError, match=r"cannot roll back.*1 write\(s\)"):
            conn.rollback()
        assert conn.execute(select(table.c.id)).scalars().all() == [7]


def test_an_error_after_writes_propagates_with_a_note_that_they_stayed(engine: Engine) -> None:
    """A rollback caused by an error does not replace the error; the error and a warning
    say that the writes before it were not undone."""
    table = Table("tx_noted", MetaData(), Column("id", Integer, primary_key=True))
    table.create(engine)
    with (
        pytest.warns(RollbackWarning, match="rollback undid nothing"),
        pytest.raises(exc.IntegrityError, match="UNIQUE constraint failed") as failed,
        engine.begin() as conn,
    ):
        conn.execute(insert(table).values(id=1))
        conn.execute(insert(table).values(id=1))
    assert any(
        "1 write(s) since the last commit already applied" in n for n in failed.value.__notes__
    )
    with engine.connect() as conn:
        assert conn.execute(select(table.c.id)).scalars().all() == [1]


def test_autocommit_isolation_makes_rollback_a_no_op(cluster: LocalCluster) -> None:
    """``isolation_level="AUTOCOMMIT"`` is the caller saying that rollbacks undo nothing."""
    engine = create_engine(url_of(cluster), isolation_level="AUTOCOMMIT")
    try:
        table = Table("tx_auto", MetaData(), Column("id", Integer, primary_key=True))
        table.create(engine)
        with engine.connect() as conn:
            assert conn.get_isolation_level() == "AUTOCOMMIT"
            conn.execute(insert(table).values(id=3))
            conn.rollback()
            assert conn.execute(select(table.c.id)).scalars().all() == [3]
    finally:
        engine.dispose()


def test_savepoints_are_refused(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(exc.NotSupportedError, match="savepoints"):
        conn.begin_nested()


# --------------------------------------------------------------------------- refusals


def test_unique_columns_are_refused_before_anything_is_created(engine: Engine) -> None:
    table = Table(
        "no_unique",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("email", String(80), unique=True),
    )
    with pytest.raises(exc.CompileError, match=r"UNIQUE \(email\) is not supported by shardb"):
        table.create(engine)
    assert "no_unique" not in table_names(engine)


def test_unique_indexes_are_refused(engine: Engine) -> None:
    metadata = MetaData()
    Table(
        "no_unique_index",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(80)),
        Index("ix_email", "email", unique=True),
    )
    with (
        pytest.warns(RollbackWarning),
        pytest.raises(exc.CompileError, match="unique index 'ix_email' is not supported"),
    ):
        metadata.create_all(engine)
    # The table went first (and stays: DDL autocommits too); the index never reached it.
    assert inspect(engine).get_indexes("no_unique_index") == []


def test_foreign_keys_are_refused(engine: Engine) -> None:
    metadata = MetaData()
    Table("fk_parent", metadata, Column("id", Integer, primary_key=True))
    Table(
        "fk_child",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey("fk_parent.id")),
    )
    with (
        pytest.warns(RollbackWarning),
        pytest.raises(
            exc.CompileError, match=r"FOREIGN KEY \(parent_id\) is not supported"
        ) as refused,
    ):
        metadata.create_all(engine)
    # create_all made the parent first; the refusal says that it stays.
    assert any("CREATE TABLE fk_parent" in note for note in refused.value.__notes__)
    assert "fk_child" not in table_names(engine)


def test_an_insert_without_its_primary_key_is_refused(engine: Engine) -> None:
    """Autoincrement: a key assigned by each range on its own would be neither unique nor in
    that range, so the dialect refuses the INSERT SQLAlchemy would send without the key."""
    table = Table(
        "no_autoinc",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("v", String(10)),
    )
    table.create(engine)
    with (
        pytest.raises(exc.CompileError, match=r"must give its primary key \(id\)"),
        engine.begin() as conn,
    ):
        conn.execute(insert(table).values(v="x"))
    with Session(engine) as session:
        session.add(Author(name="nobody"))
        with pytest.raises(exc.CompileError, match=r"must give its primary key \(id\)"):
            session.commit()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table)).scalar() == 0


def test_returning_is_refused(engine: Engine) -> None:
    table = Table("no_returning", MetaData(), Column("id", Integer, primary_key=True))
    table.create(engine)
    with (
        pytest.raises(exc.CompileError, match="RETURNING is not supported by shardb"),
        engine.begin() as conn,
    ):
        conn.execute(insert(table).values(id=1).returning(table.c.id))
    with engine.connect() as conn:
        assert conn.execute(select(table.c.id)).all() == []


def test_joins_are_refused_by_the_gateway(engine: Engine) -> None:
    table = Table("no_join", MetaData(), Column("id", Integer, primary_key=True))
    table.create(engine)
    alias = table.alias("other")
    with engine.connect() as conn, pytest.raises(exc.NotSupportedError, match="joins are not"):
        conn.execute(select(table.c.id).join(alias, table.c.id == alias.c.id))


def test_wall_clock_defaults_are_refused_by_the_gateway(engine: Engine) -> None:
    """A server-side ``now()`` would differ on each replica (non-deterministic)."""
    table = Table(
        "no_now",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", DateTime, server_default=func.now()),
    )
    with pytest.raises(exc.ProgrammingError, match="CURRENT_TIMESTAMP is not deterministic"):
        table.create(engine)
    assert "no_now" not in table_names(engine)
