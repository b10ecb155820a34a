"""Alembic migrations, shipped inside the package so ``aurora db upgrade`` works from a wheel."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from ..db import engine_for, migration_engine

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest)."""
    config = alembic_config(database_url)
    # not the pooled engine: its statement timeout would cut a long migration (aurora/db.py)
    with migration_engine(database_url) as engine, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(database_url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
