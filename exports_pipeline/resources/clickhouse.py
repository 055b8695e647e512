"""ClickHouse access for the whole pipeline: chDB in-process by default, a real server over HTTP(S).

chDB allows one data directory per process and one process per directory at a time
(environment-facts §9). The webserver, the daemon and every run worker of `dagster dev` are separate
processes, so the embedded engine is opened for one operation, closed after it, and processes take
turns on an inter-process file lock beside the data directory. Waiting beats failing.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
import dagster as dg
import pyarrow as pa
from clickhouse_connect.driver.binding import bind_query
from filelock import FileLock
from pydantic import Field

from exports_pipeline.errors import DeploymentFault
from exports_pipeline.settings import chdb_path_of
from exports_pipeline.urls import mask_url, scrub_secrets

class EmbeddedEngine:
    """The embedded engine of one data directory, as this process shares it among its threads.

    Every start of chDB's engine leaves about 5 threads behind when it is closed (chDB 4.4.0; measured:
    20 open/query/close cycles add 100 threads, 20 cycles beside an open connection add 1), and its
    global pool refuses work after 10,000 threads (Code 439). So the engine is kept open for as long as
    anything in the process uses it, and connections are made beside a keeper connection, which chDB
    attaches to the running engine (20 ms instead of 160 ms). `keep_open()` holds it across the queries
    of one run or one sensor tick (the process still takes one turn per operation, so other processes
    get theirs between runs, not between queries); without it the engine closes after each operation,
    as before, and the inter-process file lock goes with it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._turn = threading.RLock()  # one operation at a time in this process (a stream holds it)
        self._file = FileLock(path.rstrip("/") + ".lock", thread_local=False, is_singleton=False)
        self._counts = threading.Lock()  # guards the two counts, so the last one out closes the engine
        self._keeper: Any = None
        self._keeps = 0  # sessions keeping the engine open
        self._depth = 0  # operations in progress (nested ones on the thread holding the turn)
        #: Seconds the engine stays open after the last operation outside a session: other processes wait
        #: that much longer for their turn. 0 in the pipeline; the test process, whose checks query
        #: between runs, uses a little.
        self.linger_seconds = 0.0

    @contextlib.contextmanager
    def turn(self, timeout: float = -1) -> Iterator[None]:
        """Exclusive use of the running engine by this thread (reentrant), starting it if needed."""
        if not self._turn.acquire(timeout=timeout):
            raise TimeoutError(f"the embedded engine at {self.path} stayed busy in this process")
        try:
            with self._counts:
                self._depth += 1
            try:
                if self._keeper is None:
                    self._start(timeout)
                yield
            finally:
                with self._counts:
                    self._depth -= 1
                    idle = not self._depth and not self._keeps
                if idle and self.linger_seconds > 0:
                    timer = threading.Timer(self.linger_seconds, self._close_if_idle)
                    timer.daemon = True
                    timer.start()
                elif idle:
                    self._stop()
        finally:
            self._turn.release()

    @contextlib.contextmanager
    def keep_open(self) -> Iterator[None]:
        """Keep the engine (and the directory's file lock) between the operations inside.

        Leaving never waits for an operation still running in another thread (a cancelled export's
        engine thread finishes on its own): that operation closes the engine when it ends."""
        with self._counts:
            self._keeps += 1
        try:
            yield
        finally:
            with self._counts:
                self._keeps -= 1
            self._close_if_idle()

    def _close_if_idle(self) -> None:
        while True:
            with self._counts:
                if self._keeps or self._depth:
                    return  # still kept, or an operation is running: it closes the engine at its end
            if self._turn.acquire(timeout=0.05):  # only a holder about to let go can be in the way
                try:
                    with self._counts:
                        idle = not self._keeps and not self._depth
                    if idle:
                        self._stop()
                finally:
                    self._turn.release()
                return

    def _start(self, timeout: float) -> None:
        os.makedirs(self.path, exist_ok=True)
        self._file.acquire(timeout=timeout)
        try:
            import chdb

            self._keeper = chdb.connect(self.path)
        except BaseException:
            self._file.release()
            raise

    def _stop(self) -> None:
        if self._keeper is not None:
            try:
                self._keeper.close()
            finally:
                self._keeper = None
                self._file.release()


_ENGINES: dict[str, EmbeddedEngine] = {}
_ENGINES_GUARD = threading.Lock()


@atexit.register
def _close_lingering_engines() -> None:
    """Close engines left open by a linger before the interpreter goes (chDB's own exit hook runs later,
    when its thread pools are gone, and complains)."""
    for engine in list(_ENGINES.values()):
        engine.linger_seconds = 0
        engine._close_if_idle()


def embedded_engine(path: str) -> EmbeddedEngine:
    """This process's one `EmbeddedEngine` for the data directory `path`."""
    real = os.path.realpath(path)
    with _ENGINES_GUARD:
        engine = _ENGINES.get(real)
        if engine is None:
            engine = _ENGINES[real] = EmbeddedEngine(real)
        return engine


@contextlib.contextmanager
def chdb_client(path: str, database: str | None = None, timeout: float = -1) -> Iterator:
    """A clickhouse-connect client of the embedded engine at `path`, for one operation (this thread's turn)."""
    engine = embedded_engine(path)
    with engine.turn(timeout):
        client = clickhouse_connect.get_client(dsn=f"chdb://{engine.path}")
        try:
            if database:
                client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                client.database = database
            yield client
        finally:
            client.close()


def in_one_session(fn: Callable) -> Callable:
    """Run `fn` with the engine of its `clickhouse=` keyword kept open throughout (`ClickHouseResource.session`):
    for whole runs, which make many queries."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with kwargs["clickhouse"].session():
            return fn(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ the resource

_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
STREAM_CHUNK_BYTES = 1 << 20


class ClickHouseError(RuntimeError):
    """A ClickHouse connection or query failed; the message names the (masked) URL.

    Left as it is, it is transient: a refused or dropped connection, a timeout, a 5xx, a memory limit
    are retried by the step's retry policy.
    """


class ClickHouseDeploymentFault(DeploymentFault, ClickHouseError):
    """ClickHouse refused what this deployment configured: the events table, a column the export reads
    or its type (EXPORTS_EVENTS_TABLE), or our user and password (EXPORTS_CLICKHOUSE_URL). Every retry
    gets the same answer, and no customer can fix it, so it fails the run at once (see DeploymentFault)."""


# Server error codes (ErrorCodes.cpp) -> the setting that points at what ClickHouse does not have.
_DEPLOYMENT_CODES = {
    8: "EXPORTS_EVENTS_TABLE",  # THERE_IS_NO_COLUMN
    10: "EXPORTS_EVENTS_TABLE",  # NOT_FOUND_COLUMN_IN_BLOCK
    16: "EXPORTS_EVENTS_TABLE",  # NO_SUCH_COLUMN_IN_TABLE
    43: "EXPORTS_EVENTS_TABLE",  # ILLEGAL_TYPE_OF_ARGUMENT (a column of another type)
    47: "EXPORTS_EVENTS_TABLE",  # UNKNOWN_IDENTIFIER (a column the table lacks)
    53: "EXPORTS_EVENTS_TABLE",  # TYPE_MISMATCH
    60: "EXPORTS_EVENTS_TABLE",  # UNKNOWN_TABLE
    81: "EXPORTS_EVENTS_TABLE",  # UNKNOWN_DATABASE
    192: "EXPORTS_CLICKHOUSE_URL",  # UNKNOWN_USER
    193: "EXPORTS_CLICKHOUSE_URL",  # WRONG_PASSWORD
    194: "EXPORTS_CLICKHOUSE_URL",  # REQUIRED_PASSWORD
    497: "EXPORTS_CLICKHOUSE_URL",  # ACCESS_DENIED (our user lacks a grant)
    516: "EXPORTS_CLICKHOUSE_URL",  # AUTHENTICATION_FAILED
}
_CODE_IN_TEXT = re.compile(r"\bCode: (\d+)\.")


def _server_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of a driver error (clickhouse-connect sets ``code``; else the text)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = _CODE_IN_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def settings_clause(settings: Mapping[str, Any] | None) -> str:
    """` SETTINGS a = 1, b = 'x'` for the end of a SELECT.

    Settings travel in the SQL, not as per-call client settings: on chDB per-call settings force the
    whole result to be buffered (environment-facts §3), and in SQL they mean the same on a server.
    """
    if not settings:
        return ""
    items = []
    for name, value in settings.items():
        if not _SETTING_NAME.match(name):
            raise ValueError(f"invalid ClickHouse setting name {name!r}")
        if isinstance(value, bool):
            literal = "1" if value else "0"
        elif isinstance(value, int | float):
            literal = repr(value)
        else:
            literal = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
        items.append(f"{name} = {literal}")
    return " SETTINGS " + ", ".join(items)


def query_tags(**tags: Any) -> dict[str, str]:
    """Tags for `log_comment`/`query_id`, so a query in system.query_log names its run and partition."""
    return {k: str(v) for k, v in tags.items() if v is not None}


class ClickHouseResource(dg.ConfigurableResource):
    """The events source: chDB (`chdb:///dir`) or a ClickHouse server (`http(s)://user:pw@host:port/db`).

    Every value is bound as a server-side parameter (`{name:Type}` in the SQL); every query carries a
    `log_comment` with the caller's tags; results stream as bytes in a ClickHouse format or as Arrow
    record batches, with memory bounded by one block, not by the result size.
    """

    url: str = Field(
        description="chdb:///absolute/dir or http(s)://user:password@host:port/database",
        json_schema_extra={"dagster__is_secret": True},
    )
    events_table: str = Field(default="events_full", description="Table holding Langfuse events")
    connect_timeout: int = 10
    send_receive_timeout: int = 3600
    lock_timeout_seconds: float = Field(
        default=-1, description="How long to wait for the embedded engine's file lock (-1: forever)"
    )

    # ---------------------------------------------------------------- connection

    @property
    def is_embedded(self) -> bool:
        return self.url.startswith("chdb://")

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Keep the embedded engine running across the queries inside (one run, one sensor tick): see
        `EmbeddedEngine`. Nothing on a server, where a connection costs no engine start."""
        path = chdb_path_of(self.url)
        if path is None:
            yield
            return
        with embedded_engine(path).keep_open():
            yield

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A clickhouse-connect client for one operation (on chDB: holding the engine lock)."""
        path = chdb_path_of(self.url)
        if path is not None:
            with contextlib.ExitStack() as stack:
                try:
                    client = stack.enter_context(chdb_client(path, timeout=self.lock_timeout_seconds))
                except Exception as exc:  # the engine failed to start, or the lock wait timed out
                    raise ClickHouseError(f"cannot open ClickHouse at {self.masked_url}: {_first_line(exc)}") from None
                yield client
            return
        client = self._http_client()
        try:
            yield client
        finally:
            client.close()

    def _http_client(self) -> Any:
        try:
            parts = urlsplit(self.url)
            _ = parts.port
        except ValueError:  # never quote urlsplit's message: it may hold a piece of an unencoded password
            raise ClickHouseError(f"ClickHouse URL {self.masked_url} is not a valid URL (bad host or port; "
                                  "percent-encode / # ? @ : in the user name or password)") from None
        opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        database = parts.path.strip("/") or "default"
        try:
            return clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                database=database,
                secure=parts.scheme == "https",
                compress=opts.get("compress", "true").lower() not in ("0", "false", "no"),
                connect_timeout=self.connect_timeout,
                send_receive_timeout=self.send_receive_timeout,
            )
        except Exception as exc:
            raise self._error(
                f"cannot connect to ClickHouse at {self.masked_url}: {type(exc).__name__}: {self._scrub(exc)}", exc
            ) from None

    # ---------------------------------------------------------------- queries

    def _finish(self, sql: str, settings: Mapping[str, Any] | None, tags: Mapping[str, Any] | None) -> str:
        merged = dict(settings or {})
        if tags:
            merged["log_comment"] = json.dumps(dict(tags), sort_keys=True)
        return sql.rstrip().rstrip(";") + settings_clause(merged)

    def _transport(self, tags: Mapping[str, Any] | None) -> dict[str, str]:
        prefix = "-".join(str(v) for v in (tags or {}).values())[:80]
        qid = re.sub(r"[^A-Za-z0-9_.:-]", "_", f"{prefix}-{uuid.uuid4().hex[:12]}" if prefix else uuid.uuid4().hex)
        return {"query_id": qid}

    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> list[tuple]:
        """Rows of a small result (counts, profiles, probes)."""
        with self.client() as client:
            return self._wrap(
                lambda: client.query(self._finish(sql, settings, tags), parameters=dict(parameters or {}),
                                     settings=self._transport(tags)).result_rows
            )

    def query_dicts(self, sql: str, parameters: Mapping[str, Any] | None = None, **kw: Any) -> list[dict]:
        with self.client() as client:
            result = self._wrap(
                lambda: client.query(self._finish(sql, kw.get("settings"), kw.get("tags")),
                                     parameters=dict(parameters or {}), settings=self._transport(kw.get("tags")))
            )
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def command(
        self, sql: str, parameters: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
    ) -> Any:
        with self.client() as client:
            return self._wrap(lambda: client.command(sql, parameters=dict(parameters or {}) or None,
                                                     settings=self._transport(tags)))

    @contextlib.contextmanager
    def stream(
        self, sql: str, fmt: str, parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
        chunk_bytes: int = STREAM_CHUNK_BYTES,
    ) -> Iterator[Iterable[bytes]]:
        """The result as bytes in ClickHouse format `fmt`, streamed.

        On chDB only header-less row formats stream (CSV, TabSeparated, JSONEachRow, Native, RowBinary);
        other formats would be buffered whole by the engine, so they are refused here rather than
        silently holding a window in memory. Use `export_to_file` or `arrow_batches` for those.
        """
        if self.is_embedded and fmt not in EMBEDDED_STREAM_FORMATS:
            raise ValueError(f"format {fmt} does not stream on the embedded engine; use one of {sorted(EMBEDDED_STREAM_FORMATS)}")
        with self.client() as client:
            raw = self._wrap(lambda: client.raw_stream(
                self._finish(sql, settings, tags), parameters=dict(parameters or {}), fmt=fmt,
                settings=self._transport(tags),
            ))
            try:
                yield self._chunks(raw, chunk_bytes)
            finally:
                raw.close()

    def _chunks(self, raw: Any, chunk_bytes: int) -> Iterator[bytes]:
        while True:
            try:
                block = raw.read(chunk_bytes)
            except Exception as exc:
                raise ClickHouseError(f"ClickHouse stream from {self.masked_url} failed: {self._scrub(exc)}") from exc
            if not block:
                return
            yield block

    @contextlib.contextmanager
    def arrow_batches(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None, rows_per_batch: int = 100_000,
    ) -> Iterator[Iterable[pa.RecordBatch]]:
        """The result as Arrow record batches, streamed.

        clickhouse-connect's `query_arrow_stream` is materialized whole by its chDB backend
        (environment-facts §3), so on chDB this reads the engine's own Arrow stream
        (`send_query(...).record_batch(n)`), which is bounded; over HTTP it uses the driver's stream.
        """
        final = self._finish(sql, settings, tags)
        with self.client() as client:
            if self.is_embedded:
                bound_sql, bind_params = bind_query(final, dict(parameters or {}))
                params = {k[len("param_"):]: v for k, v in bind_params.items()}
                conn = client._backend._handle.conn  # the engine handle clickhouse-connect opened for this client
                streaming = self._wrap(lambda: conn.send_query(bound_sql, "Arrow", params=params))
                try:
                    yield self._wrap(lambda: iter(streaming.record_batch(rows_per_batch)))
                finally:
                    streaming.close()
            else:
                stream = self._wrap(lambda: client.query_arrow_stream(
                    final, parameters=dict(parameters or {}), settings=self._transport(tags)))
                with stream:
                    yield iter(stream)

    def export_to_file(
        self, sql: str, fmt: str, path: str, parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
        compression: str | None = None,
    ) -> int:
        """Write the result in `fmt` to a local file and return its size.

        On chDB the engine writes the file itself (`INTO OUTFILE ... TRUNCATE`), compressed by the engine
        when `compression` ('gzip'/'zstd') is given: the fastest path, bounded for every format. On a
        server the bytes stream over HTTP (compression is then the caller's).
        """
        if self.is_embedded:
            literal = "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"
            body = sql.rstrip().rstrip(";")
            if compression not in (None, "none", "gzip", "zstd"):
                raise ValueError(f"unknown compression {compression!r}")
            comp = f" COMPRESSION '{compression}'" if compression not in (None, "none") else ""
            final = f"{body} INTO OUTFILE {literal} TRUNCATE{comp} FORMAT {fmt}{self._settings_only(settings, tags)}"
            with self.client() as client:
                self._wrap(lambda: client.command(final, parameters=dict(parameters or {}) or None))
        else:
            with open(path, "wb") as out, self.client() as client:
                raw = self._wrap(lambda: client.raw_stream(
                    self._finish(sql, settings, tags), parameters=dict(parameters or {}), fmt=fmt,
                    settings=self._transport(tags)))
                try:
                    for block in self._chunks(raw, STREAM_CHUNK_BYTES):
                        out.write(block)
                finally:
                    raw.close()
        return os.path.getsize(path)

    def _settings_only(self, settings: Mapping[str, Any] | None, tags: Mapping[str, Any] | None) -> str:
        return self._finish("", settings, tags)

    def _wrap(self, fn: Any) -> Any:
        try:
            return fn()
        except ClickHouseError:
            raise
        except Exception as exc:
            raise self._error(f"ClickHouse at {self.masked_url}: {self._scrub(exc)}", exc) from exc

    def _error(self, message: str, exc: BaseException) -> ClickHouseError:
        """A ``ClickHouseDeploymentFault`` naming the setting when ClickHouse says what is missing, else a
        (transient) ``ClickHouseError``."""
        setting = _DEPLOYMENT_CODES.get(_server_code(exc) or 0)
        if setting is None:
            return ClickHouseError(message)
        if setting == "EXPORTS_EVENTS_TABLE":
            why = f"EXPORTS_EVENTS_TABLE={self.events_table} lacks a table, column or type the export reads"
        else:
            why = f"the user of EXPORTS_CLICKHOUSE_URL={self.masked_url} cannot log in or read the events table"
        return ClickHouseDeploymentFault(f"{message} ({why})", setting=setting, code=str(_server_code(exc)))

    def _scrub(self, exc: BaseException) -> str:
        """The first line of a driver error, with the URL's password (if any) and any URL in it masked."""
        return scrub_secrets(_first_line(exc), self.url)


EMBEDDED_STREAM_FORMATS = frozenset({"CSV", "TabSeparated", "TSV", "JSONEachRow", "Native", "RowBinary"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__
