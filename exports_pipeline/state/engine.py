"""Engines for the state database: one per URL and process, tuned for several processes on one SQLite file.

`dagster dev` runs a webserver, a daemon and a run worker per run, all opening the same SQLite file. WAL lets
readers proceed while one process writes; a busy timeout makes writers wait for each other instead of
failing with "database is locked". pysqlite's own transaction handling is switched off so that BEGIN is
ours: reads use a deferred BEGIN, writes `BEGIN IMMEDIATE`, which takes the write lock up front. A
deferred transaction that later tries to write can fail at once with SQLITE_BUSY (the busy handler is not
used for that upgrade under WAL), so every read-then-write transaction must be IMMEDIATE.

Bound parameters are hidden from SQL logging and error messages: they include encrypted secrets, access
key ids and presigned URLs, and turning on `sqlalchemy.engine` logging to debug a query must not leak them.

A database that cannot be reached or opened at all raises `StateDatabaseError`, one line naming the
(masked) URL and the driver's reason, instead of SQLAlchemy's page of traceback; errors of a connection
that did open are left as they are.

A new SQLite file is created 0600 whatever the umask: it holds access key ids and encrypted secrets.
SQLite gives the -wal and -shm files the mode of the database file, so they are 0600 too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import event

from exports_pipeline.errors import ExportsError
from exports_pipeline.urls import mask_url, scrub_secrets

SQLITE_BUSY_TIMEOUT_MS = 30_000
STATE_FILE_MODE = 0o600

_ENGINES: dict[str, sa.Engine] = {}
_GUARD = threading.Lock()


class StateDatabaseError(ExportsError):
    """The state database cannot be reached or opened; the message names its masked URL and why.

    Neither the customer's fault nor known to be transient (a server restarting, or a path that will never
    work), so it is left to the caller's retry policy.
    """


def make_engine(database_url: str) -> sa.Engine:
    """A new engine with the backend-specific connection setup; callers normally want `get_engine`."""
    try:
        url = sa.make_url(database_url)
    except (ValueError, sa.exc.ArgumentError):  # never quoted: SQLAlchemy's message holds the bad "port"
        raise StateDatabaseError(f"the state database URL {mask_url(database_url)} (EXPORTS_DATABASE_URL) is "
                                 "not a valid URL: percent-encode / # ? @ : in the user name or password") from None
    if url.get_backend_name() != "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
        _explain_connect_errors(engine, database_url)
        return engine
    if url.database in (None, "", ":memory:"):
        raise ValueError("database_url: an in-memory SQLite database cannot be shared; use a file path")
    engine = sa.create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
    _explain_connect_errors(engine, database_url)

    @event.listens_for(engine, "do_connect")
    def _create_private(_dialect, _record, cargs, _cparams) -> None:
        _create_private_file(cargs[0] if cargs else url.database)

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


def _create_private_file(path: str) -> None:
    """Create the SQLite file 0600 before SQLite does (which would use 0644 less the umask)."""
    if path.startswith("file:") or os.path.exists(path):
        return  # URI filenames are the caller's business; an existing file keeps the mode it was given
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STATE_FILE_MODE)
    except FileExistsError:
        return  # another process created it first, the same way
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return  # SQLite will fail to open it too, with the reason `_explain_connect_errors` reports
    try:
        os.fchmod(fd, STATE_FILE_MODE)  # the umask may have removed bits of the mode given to open()
    finally:
        os.close(fd)


def _explain_connect_errors(engine: sa.Engine, database_url: str) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(context) -> BaseException | None:
        if context.connection is not None or context.statement is not None or context.is_pre_ping:
            return None  # a query of an open connection failed, or a ping that reconnects: not ours to reword
        reason = str(context.original_exception).strip().splitlines() or [type(context.original_exception).__name__]
        return StateDatabaseError(
            f"cannot open the state database {mask_url(database_url)} (EXPORTS_DATABASE_URL): "
            f"{scrub_secrets(reason[0][:300], database_url)}"
        )


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
