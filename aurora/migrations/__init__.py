"""Alembic migrations, shipped inside the package so ``aurora db upgrade`` works from a wheel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..db import engine_for, migration_engine

HERE = Path(__file__).resolve().parent

#: the newest revision, which every process that serves checks the database is at. Kept here so
#: that those long-running processes need not import Alembic (and keep it in memory) for one
#: look; tests/test_db.py checks that it is Alembic's own head.
HEAD = "0016_pgpath"


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest)."""
    from alembic import command

    config = alembic_config(database_url)
    # not the pooled engine: its statement timeout would cut a long migration (aurora/db.py)
    with migration_engine(database_url) as engine, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current(database_url: str) -> str | None:
    """The revision the database is at (None: no Aurora tables), read as Alembic keeps it."""
    from sqlalchemy import inspect, text

    with engine_for(database_url).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(versions) > 1:  # Alembic keeps one row per head: this code has one
        return ",".join(sorted(versions))
    return versions[0] if versions else None
