"""Engines for the state database: one per URL and process, tuned for several processes on one SQLite file.

`dagster dev` runs a webserver, a daemon and a run worker per run, all opening the same SQLite file. WAL lets
readers proceed while one process writes; a busy timeout makes writers wait for each other instead of
failing with "database is locked". pysqlite's own transaction handling is switched off so that BEGIN is
ours: reads use a deferred BEGIN, writes `BEGIN IMMEDIATE`, which takes the write lock up front. A
deferred transaction that later tries to write can fail at once with SQLITE_BUSY (the busy handler is not
used for that upgrade under WAL), so every read-then-write transaction must be IMMEDIATE.

Bound parameters are hidden from SQL logging and error messages: they include encrypted secrets, access
key ids and presigned URLs, and turning on `sqlalchemy.engine` logging to debug a query must not leak them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import event

SQLITE_BUSY_TIMEOUT_MS = 30_000

_ENGINES: dict[str, sa.Engine] = {}
_GUARD = threading.Lock()


def make_engine(database_url: str) -> sa.Engine:
    """A new engine with the backend-specific connection setup; callers normally want `get_engine`."""
    url = sa.make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if url.database in (None, "", ":memory:"):
        raise ValueError("database_url: an in-memory SQLite database cannot be shared; use a file path")
    engine = sa.create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see module docstring
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("state_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def get_engine(database_url: str) -> sa.Engine:
    """The process-wide engine for `database_url`, so re-created Dagster resources reuse one pool."""
    with _GUARD:
        engine = _ENGINES.get(database_url)
        if engine is None:
            engine = _ENGINES[database_url] = make_engine(database_url)
        return engine


def dispose_engine(database_url: str) -> None:
    """Close and forget the cached engine (tests, and processes that are about to drop the database)."""
    with _GUARD:
        engine = _ENGINES.pop(database_url, None)
    if engine is not None:
        engine.dispose()


def _forget_after_fork() -> None:
    # A forked child must not reuse the parent's sockets/file handles; drop them without closing.
    global _GUARD
    _GUARD = threading.Lock()
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@contextlib.contextmanager
def read_tx(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def write_tx(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that holds SQLite's write lock from its first statement (no-op option elsewhere)."""
    with engine.connect() as conn:
        conn.execution_options(state_write=True)
        with conn.begin():
            yield conn
