"""Alembic, driven from code: the migrations ship inside the package, so no alembic.ini is needed anywhere.

The version table has its own name because Dagster's PostgreSQL storage keeps Alembic's default
`alembic_version` and a deployment may point both at one database. Concurrent first starts (webserver,
daemon and run workers all at once) are serialized by a transaction-scoped advisory lock on PostgreSQL
and by `BEGIN IMMEDIATE` on SQLite; DDL is transactional on both, so the loser finds the work done.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from exports_pipeline.state.engine import get_engine, read_tx, write_tx

VERSION_TABLE = "exports_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x65_78_70_6F_72_74_73  # "exports"; any constant shared by all our processes

_READY: set[str] = set()
_READY_GUARD = threading.Lock()


def alembic_config(connection: sa.Connection | None = None, database_url: str | None = None) -> Config:
    """A Config for `alembic.command`; pass a connection to run inside the caller's transaction."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with read_tx(get_engine(database_url)) as conn:
        return _current(conn)


def upgrade_engine(engine: sa.Engine) -> str:
    with write_tx(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        command.upgrade(alembic_config(conn), "head")
        revision = _current(conn)
    assert revision is not None
    return revision


def upgrade(database_url: str) -> str:
    """Bring the database to the newest revision (a no-op when it is there); returns that revision."""
    revision = upgrade_engine(get_engine(database_url))
    with _READY_GUARD:
        _READY.add(database_url)
    return revision


def ensure_schema(database_url: str) -> sa.Engine:
    """The cached engine, migrated at most once per process and URL; cheap after the first call."""
    engine = get_engine(database_url)
    if database_url in _READY:
        return engine
    with _READY_GUARD:
        if database_url not in _READY:
            with read_tx(engine) as conn:
                current = _current(conn)
            if current != head_revision():
                upgrade_engine(engine)
            _READY.add(database_url)
    return engine


def forget(database_url: str) -> None:
    """Make the next `ensure_schema` check the database again (after it was dropped or downgraded)."""
    with _READY_GUARD:
        _READY.discard(database_url)
