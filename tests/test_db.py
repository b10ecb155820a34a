"""How SQLite transactions begin: a snapshot for reads, the write lock up front for writes."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, select, text

from aurora.db import Database
from aurora.models import Event


def _other_writer(db: Database) -> sqlite3.Connection:
    return sqlite3.connect(db.engine.url.database, timeout=0, isolation_level=None)


def _add_event(connection: sqlite3.Connection, event_id: str) -> None:
    connection.execute("INSERT INTO events (id, origin, type, created_at, data) VALUES (?, 'other', 't', "
                       "'2026-01-01 00:00:00.000000', '{}')", (event_id,))


def test_a_read_sees_one_snapshot_for_all_its_statements(runtime) -> None:
    db = runtime.db
    other = _other_writer(db)
    with db.read() as session:
        before = session.scalar(select(func.count()).select_from(Event))
        _add_event(other, "e-1")  # commits at once: the other connection is in autocommit
        assert session.scalar(select(func.count()).select_from(Event)) == before
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == before + 1


def test_a_write_takes_the_write_lock_when_it_begins(runtime) -> None:
    db = runtime.db
    other = _other_writer(db)
    with db.write_rows():
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again once the write committed
    other.execute("ROLLBACK")


def test_a_single_read_opens_no_transaction(runtime) -> None:
    db = runtime.db
    with db.read_rows() as connection:
        connection.execute(text("SELECT 1")).scalar()
        assert connection.connection.driver_connection.in_transaction is False


def test_executions_dispatch_no_connection_events(runtime) -> None:
    # any connection event listener makes SQLAlchemy dispatch events around every statement
    db = runtime.db
    assert not db.engine._has_events
    assert not db._immediate._has_events
    assert not db._single_read._has_events


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrations_build_exactly_the_tables_the_models_describe(runtime, request, backend) -> None:
    # A model changed without its migration (or a table that no longer reaches Base.metadata, as
    # when the federation's tables moved to their own module) shows as a difference here.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from aurora.migrations import upgrade
    from aurora.models import Base

    url = runtime.settings.database_url if backend == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection, opts={
                "compare_type": False, "render_as_batch": True}), Base.metadata)
    finally:
        engine.dispose()
    tables = {d[1].name for d in differences if d[0] in ("add_table", "remove_table")}
    assert not tables, f"tables the migrations and the models disagree on: {sorted(tables)}"
    columns = [(d[0], d[2], d[3].name) for d in differences if d[0] in ("add_column", "remove_column")]
    assert not columns, f"columns the migrations and the models disagree on: {columns}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_each_partial_index_of_the_models_is_partial_in_the_migrated_database(runtime, request, backend) -> None:
    # The models name each partial index's condition once, for whichever dialect is in use
    # (models.partial): the database the migrations build has each of them with that condition.
    from sqlalchemy import create_engine, text

    from aurora.migrations import upgrade
    from aurora.models import PARTIAL_INDEXES

    url = runtime.settings.database_url if backend == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url)
    query = ("SELECT sql FROM sqlite_master WHERE name = :name" if backend == "sqlite"
             else "SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            for index, where in PARTIAL_INDEXES.items():
                built = connection.execute(text(query), {"name": index.name}).scalar_one()
                assert " WHERE " in built.upper(), (index.name, built)
                assert index.dialect_options[backend]["where"].text == where  # what Alembic compares
    finally:
        engine.dispose()
    assert len(PARTIAL_INDEXES) == 6


def test_the_head_revision_the_serving_processes_check_is_alembics_own(runtime) -> None:
    # Serving processes compare the database with migrations.HEAD instead of asking Alembic (which
    # they would otherwise keep in memory): a new migration must move HEAD too.
    from alembic.script import ScriptDirectory

    from aurora.migrations import HEAD, alembic_config, current, upgrade

    assert ScriptDirectory.from_config(alembic_config(runtime.settings.database_url)).get_heads() == [HEAD]
    upgrade(runtime.settings.database_url)
    assert current(runtime.settings.database_url) == HEAD


def test_a_database_without_aurora_tables_is_at_no_revision(tmp_path) -> None:
    from aurora.migrations import current

    assert current(f"sqlite:///{tmp_path / 'empty.db'}") is None
