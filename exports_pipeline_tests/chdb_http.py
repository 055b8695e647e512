"""A small ClickHouse HTTP interface over chDB, so the clickhouse-connect HTTP transport is tested too.

No ClickHouse server is installable on these machines (environment-facts §2); this speaks enough of
the HTTP protocol for clickhouse-connect's HttpClient: query with server-side `param_*` binding,
settings in the URL, INSERT with a body, errors with `X-ClickHouse-Exception-Code`, and chunked
streaming of row formats. It records each request's query_id, parameters and SQL so tests can check
what the pipeline sent. The engine is shared with the test process through the same file lock the
pipeline uses.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import threading
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb

from exports_pipeline.resources.clickhouse import embedded_engine

_TRANSPORT = {
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "compress", "decompress", "wait_end_of_query", "client_protocol_version", "enable_http_compression",
    "buffer_size", "send_progress_in_http_headers", "http_headers_progress_interval_ms", "user", "password",
    "quota_key", "role",
}
_STREAMABLE = {"Native", "TabSeparated", "TSV", "CSV", "RowBinary", "JSONEachRow"}
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
_DDL = re.compile(r"^\s*(CREATE|DROP|ALTER|TRUNCATE|RENAME|SYSTEM|OPTIMIZE|SET|USE)\b", re.I)


@dataclass
class Recorded:
    query_id: str
    sql: str
    params: dict[str, str]
    settings: dict[str, str]


@dataclass
class ShimState:
    path: str
    requests: list[Recorded] = field(default_factory=list)
    fail_next: int = 0  # answer this many next requests with a 503 (transient fault injection)


def _error_code(message: str) -> str:
    m = re.search(r"Code: (\d+)", message)
    return m.group(1) if m else "1"


def _make_handler(state: ShimState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            """Quiet: the test output is for assertions."""

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/ping" or (url.path == "/" and not url.query):
                return self._reply(200, b"Ok.\n", {"Content-Type": "text/plain"})
            self._execute(b"")

        def do_POST(self) -> None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
                data = bytes(body)
            else:
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
            encoding = self.headers.get("Content-Encoding")
            if encoding == "gzip":
                data = gzip.decompress(data)
            elif encoding == "deflate":
                data = zlib.decompress(data)
            self._execute(data)

        def _execute(self, body: bytes) -> None:
            if state.fail_next > 0:
                state.fail_next -= 1
                return self._reply(503, b"Code: 202. DB::Exception: injected overload (TOO_MANY_SIMULTANEOUS_QUERIES)",
                                   {"X-ClickHouse-Exception-Code": "202"})
            q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True))
            qid = q.get("query_id") or str(uuid.uuid4())
            params = {k[6:]: v for k, v in q.items() if k.startswith("param_")}
            settings = {k: v for k, v in q.items() if k not in _TRANSPORT and not k.startswith("param_")}
            sql, insert_file = self._sql(q.get("query", ""), body)
            state.requests.append(Recorded(qid, sql, params, settings))
            fm = _FORMAT.search(sql)
            fmt = fm.group(1) if fm else q.get("default_format", "TabSeparated")
            if settings:
                clause = ", ".join(f"{k} = '{v}'" for k, v in settings.items())
                if fm:
                    sql = f"{sql[:fm.start()]} SETTINGS {clause} {sql[fm.start():]}"
                elif not _DDL.match(sql):
                    sql += f" SETTINGS {clause}"
            headers = {"X-ClickHouse-Query-Id": qid, "X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC",
                       "X-ClickHouse-Server-Display-Name": "chdb-http-test", "Content-Type": "application/octet-stream"}
            with embedded_engine(state.path).turn():
                conn = chdb.connect(state.path)
                try:
                    if q.get("database"):
                        conn.query(f"USE `{q['database']}`")
                    if fmt in _STREAMABLE and not insert_file and re.match(r"^\s*(SELECT|WITH)\b", sql, re.I):
                        return self._stream(conn, sql, fmt, params, headers)
                    result = conn.query(sql, fmt, params=params)
                    headers["X-ClickHouse-Summary"] = (
                        '{"read_rows":"%d","read_bytes":"%d","written_rows":"0","written_bytes":"0"}'
                        % (result.rows_read(), result.bytes_read())
                    )
                    self._reply(200, result.bytes() or b"", headers)
                except Exception as exc:  # the engine's error, in ClickHouse's HTTP error shape
                    msg = str(exc)
                    msg = msg[msg.find("Code: "):] if "Code: " in msg else msg
                    self._reply(500, msg.encode(), {"X-ClickHouse-Exception-Code": _error_code(msg),
                                                    "X-ClickHouse-Query-Id": qid, "Content-Type": "text/plain"})
                finally:
                    conn.close()
                    if insert_file:
                        os.unlink(insert_file)

        def _sql(self, url_sql: str, body: bytes) -> tuple[str, str | None]:
            """The statement to run; an INSERT's data goes through a temporary file (chDB reads files)."""
            m = _INSERT.match(url_sql) if url_sql and body else None
            if not m and body[:6].upper() == b"INSERT":
                nl = body.find(b"\n")
                m2 = _INSERT.match(body[:nl].decode()) if nl > 0 else None
                if m2:
                    m, body = m2, body[nl + 1:]
            if m:
                fd, path = tempfile.mkstemp(suffix=".data")
                os.write(fd, body)
                os.close(fd)
                return f"INSERT INTO {m.group(1)} FROM INFILE '{path}' FORMAT {m.group(2)}", path
            if body:
                return (url_sql + "\n" if url_sql else "") + body.decode(), None
            return url_sql, None

        def _stream(self, conn, sql: str, fmt: str, params: dict, headers: dict) -> None:
            result = conn.send_query(sql, fmt, params=params)
            try:
                first = next(result, None)  # errors surface before the 200 goes out
            except Exception as exc:
                msg = str(exc)
                msg = msg[msg.find("Code: "):] if "Code: " in msg else msg
                return self._reply(500, msg.encode(), {"X-ClickHouse-Exception-Code": _error_code(msg)})
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = first
            while chunk is not None:
                data = chunk.bytes()
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                chunk = next(result, None)
            self.wfile.write(b"0\r\n\r\n")

    return Handler


class ChdbHttpServer:
    """Serve the chDB directory `path` on 127.0.0.1:`port` in a background thread."""

    def __init__(self, path: str, port: int = 0):
        self.state = ShimState(path=os.path.realpath(path))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self.state))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> ChdbHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
