"""Alembic, driven from code: ``upgrade head`` at start and from ``readmit db upgrade``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.core.config import Settings


def alembic_config(settings: Settings) -> Config:
    config = _scripts(settings.migrations_dir)
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return config


def upgrade_to_head(settings: Settings, engine: Engine) -> None:
    config = alembic_config(settings)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_at_head(settings: Settings, engine: Engine) -> bool:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == _head(settings.migrations_dir)


@cache
def _head(migrations_dir: Path) -> str | None:
    """The migrations' head, read once per process: finding it compiles every migration script
    (tens of milliseconds of the interpreter), and /readyz, polled while the indexes load, asked
    for it at every call."""
    return ScriptDirectory.from_config(_scripts(migrations_dir)).get_current_head()


def _scripts(migrations_dir: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    return config
