"""Object store test helpers: a fault-injecting reverse proxy in front of moto, and store factories.

The proxy is a real HTTP server (stdlib) that forwards every request to moto's server unchanged, unless
told to answer a chosen S3 operation with an error, drop the connection, stall, or go away altogether
for a while (an outage: its port stops listening, so connections are refused, and it comes back on the
same port). The store under test points its endpoint_url at the proxy, so boto3, botocore and urllib3
see genuine failures on the wire; nothing inside boto3 is mocked.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from exports_pipeline.resources.object_store import Destination, S3ObjectStore, StoreSettings
from exports_pipeline.resources.object_store.sizing import MiB

# Fast retries so fault tests take milliseconds, 5 MiB parts so multipart needs little data.
FAST = {"min_part_size": 5 * MiB, "default_part_size": 5 * MiB, "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05}

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
               "upgrade", "expect", "content-length"}


def s3_operation(method: str, path: str) -> str:
    """The S3 API operation a path-style request stands for."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else ("PutObject" if key else "CreateBucket")
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else ("DeleteObject" if key else "DeleteBucket")
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if "uploads" in query:
        return "ListMultipartUploads"
    if "uploadId" in query:
        return "ListParts"
    if key:
        return "GetObject"
    return "ListObjectsV2" if "list-type" in query else "ListObjects"


@dataclass
class Rule:
    operation: str  # an S3 operation name, or "*" for every request
    action: str  # error | drop | drop_after | hang | slow | outage
    first: int = 1  # the rule applies to the first..last request of that operation (1-based)
    last: float = 1
    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    seconds: float = 0.0


class FaultProxy:
    """Forwards to moto; ``fail``/``drop``/``hang``/``slow``/``outage`` choose which requests misbehave."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.rules: list[Rule] = []
        self.counts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        # (operation, request headers, sha256 of the body as received) of every forwarded request
        self.seen: list[tuple[str, dict[str, str], str]] = []
        self.lock = threading.Lock()
        # (went away, came back) monotonic times of each outage; came back is None while it lasts
        self.outages: list[list[float | None]] = []
        self._closed = threading.Event()
        self._outage_thread: threading.Thread | None = None
        self.server, self.thread = self._serve(0)
        self.port = self.server.server_address[1]

    def _serve(self, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # SO_REUSEADDR: the same port again
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        return server, thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def down(self) -> bool:
        with self.lock:
            return bool(self.outages) and self.outages[-1][1] is None

    # --- what to break

    def fail(self, operation: str, *, nth: int = 1, times: float = 1, status: int = 500,
             code: str = "InternalError", message: str = "We encountered an internal error.") -> None:
        """Answer the nth (and following ``times``-1) request of ``operation`` with an S3 error."""
        self.rules.append(Rule(operation, "error", nth, nth + times - 1, status, code, message))

    def fail_all(self, status: int = 403, code: str = "AccessDenied", message: str = "Access Denied") -> None:
        self.rules.append(Rule("*", "error", 1, float("inf"), status, code, message))

    def drop(self, operation: str, *, nth: int = 1, times: float = 1, after_forward: bool = False) -> None:
        """Close the connection mid-request (or, after_forward, once upstream has acted on it)."""
        self.rules.append(Rule(operation, "drop_after" if after_forward else "drop", nth, nth + times - 1))

    def hang(self, operation: str, *, seconds: float, nth: int = 1, times: float = 1) -> None:
        """Say nothing for ``seconds``, then close without forwarding (a read timeout for the client)."""
        self.rules.append(Rule(operation, "hang", nth, nth + times - 1, seconds=seconds))

    def slow(self, operation: str, *, seconds: float) -> None:
        """Forward every request of ``operation``, each after a pause (to observe concurrency)."""
        self.rules.append(Rule(operation, "slow", 1, float("inf"), seconds=seconds))

    def outage(self, operation: str, *, seconds: float, nth: int = 1) -> None:
        """At the nth request of ``operation`` the server goes away for ``seconds``: that request's
        connection is cut, so is every open connection at its next request, and new connections are
        refused (nothing listens on the port) until it listens again on the same port."""
        self.rules.append(Rule(operation, "outage", nth, nth, seconds=seconds))

    def _go_away(self, seconds: float) -> None:
        with self.lock:
            if self.outages and self.outages[-1][1] is None:
                return
            self.outages.append([time.monotonic(), None])
        server = self.server
        server.shutdown()  # from a handler thread: serve_forever runs in its own thread
        server.server_close()  # the listening socket is gone: connections are refused
        self._outage_thread = threading.Thread(target=self._come_back, args=(seconds,), daemon=True)
        self._outage_thread.start()

    def _come_back(self, seconds: float) -> None:
        if self._closed.wait(seconds):
            return
        self.server, self.thread = self._serve(self.port)
        with self.lock:
            self.outages[-1][1] = time.monotonic()

    def count(self, operation: str) -> int:
        with self.lock:
            return self.counts[operation]

    # --- internals

    def _match(self, operation: str) -> Rule | None:
        with self.lock:
            self.counts[operation] += 1
            n = self.counts[operation]
        for rule in self.rules:
            if rule.operation in ("*", operation) and rule.first <= n <= rule.last:
                return rule
        return None

    def _forward(self, method: str, path: str, headers, body: bytes):
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def close(self) -> None:
        self._closed.set()
        if self._outage_thread is not None:
            self._outage_thread.join()
        if not self.down:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args: object) -> None:
        """Quiet: the test output is for assertions."""

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _kill(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # already gone: the point was to cut it
            return

    def _handle(self) -> None:
        proxy = self.owner
        if proxy.down:  # a connection opened before the outage: the server is gone, so is it
            self._kill()
            return
        operation = s3_operation(self.command, self.path)
        length = int(self.headers.get("Content-Length") or 0)
        rule = proxy._match(operation)
        action = rule.action if rule else "forward"
        if action == "outage":
            proxy._go_away(rule.seconds)
            self._kill()
            return
        if action == "drop":
            self.rfile.read(min(length, 1024))
            self._kill()
            return
        body = self.rfile.read(length) if length else b""
        if action == "hang":
            time.sleep(rule.seconds)
            self._kill()
            return
        if action == "error":
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{rule.code}</Code>'
                       f"<Message>{rule.message}</Message>"
                       "<RequestId>fault-proxy</RequestId></Error>").encode()
            self.send_response(rule.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        with proxy.lock:
            proxy.seen.append((operation, {k.lower(): v for k, v in self.headers.items()},
                               hashlib.sha256(body).hexdigest()))
            proxy.in_flight[operation] += 1
            proxy.max_in_flight[operation] = max(proxy.max_in_flight[operation], proxy.in_flight[operation])
        try:
            if action == "slow":
                time.sleep(rule.seconds)
            status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
        finally:
            with proxy.lock:
                proxy.in_flight[operation] -= 1
        if action == "drop_after":
            self._kill()
            return
        self.send_response(status)
        for name, value in headers:
            lowered = name.lower()
            if lowered in ("server", "date") or lowered in _HOP_BY_HOP and not (
                    lowered == "content-length" and self.command == "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint)
    yield proxy
    proxy.close()


@pytest.fixture
def s3_client(moto_endpoint: str):
    """A plain boto3 client on moto, to check what really landed in the bucket."""
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    yield client
    client.close()


@pytest.fixture
def make_store(moto_endpoint: str):
    """``make_store(bucket, endpoint=None, prefix='', **settings)`` → an S3ObjectStore with fast retries."""
    stores: list[S3ObjectStore] = []

    def make(bucket: str, *, endpoint: str | None = None, prefix: str = "", secret: str = "testing",
             destination: dict | None = None, **settings: object) -> S3ObjectStore:
        dest = Destination.from_url(f"s3://{bucket}/{prefix}", endpoint_url=endpoint or moto_endpoint,
                                    access_key_id="testing", secret_access_key=secret,
                                    **(destination or {}))
        store = S3ObjectStore(dest, StoreSettings(**{**FAST, **settings}))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def pending_uploads(client, bucket: str) -> list:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def object_missing(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def seed_objects(bucket: str, objects: dict[str, bytes]) -> None:
    """Fill a bucket fast: 1,500 PUTs through moto's HTTP front cost ~10 s, so the (in-process) server's
    storage is filled directly. Only test data goes this way; the code under test always uses HTTP."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key, value in objects.items():
        backend.put_object(bucket, key, value)


def unique_key(name: str = "obj") -> str:
    return f"exports/{uuid.uuid4().hex[:8]}/{name}"


@pytest.fixture(scope="session")
def other_s3_endpoint() -> Iterator[str]:
    """A second S3 server in a process of its own (moto keeps one store per process): an endpoint whose
    buckets and keys are not the first server's, as after a customer moves to another provider."""
    import socket
    import subprocess
    import sys
    import time

    from exports_pipeline_tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the second moto server did not start") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def tls_server(tmp_path) -> Iterator[str]:
    """An https:// endpoint on loopback presenting a self-signed certificate, which no client trusts:
    every TLS handshake fails certificate verification on the client's side."""
    import datetime as dt
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    # the handshake runs in accept(); a client that rejects the certificate makes it fail there, which
    # socketserver ignores (an OSError), and the server keeps accepting
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
