"""A local PostHog capture endpoint that enforces the documented contract and injects faults (pytest plugin).

Contract enforced (`exports_pipeline/resources/posthog.py` cites the sources): `POST /batch/` only, body
gzip'd (`Content-Encoding: gzip`), at most 5 MiB uncompressed, JSON `{"api_key", "batch": [...],
"historical_migration"?}` with the configured project key (401 otherwise), no `sent_at`, a non-empty
batch; every event an object with `event`, a non-empty string `distinct_id`, a valid `uuid`, a
`timestamp` and `properties`, and at most 900 KiB as PostHog's Kafka message measures it. `POST
/flags/?v=2` answers the key check. A violation is answered 400 and recorded in `violations`, so a test
can assert there were none.

Faults (`plan(...)`): the next requests get a status (429 with `Retry-After`, 5xx, 400, 401), a delay
longer than the client's timeout, or a dropped connection; `fail_after(k, ...)` lets `k` requests
through first. Only accepted requests store events.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_EVENT_BYTES = 900 * 1024
API_KEY = "phc_test_peer_key_0123456789"


@dataclass
class Fault:
    status: int | None = None  # an HTTP status to answer
    retry_after: str | None = None
    delay: float = 0.0  # sleep before answering (a timeout when longer than the client's)
    drop: bool = False  # close the connection without an answer
    body: str = ""


@dataclass
class Received:
    historical: bool
    events: int
    raw_bytes: int
    gzip_bytes: int
    at: float


@dataclass
class PostHogPeer:
    url: str = ""
    api_key: str = API_KEY
    events: dict[str, dict] = field(default_factory=dict)  # uuid -> the last accepted event
    uuid_counts: Counter = field(default_factory=Counter)
    batches: list[Received] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)  # arrival time of every /batch/ request
    violations: list[str] = field(default_factory=list)
    flag_checks: int = 0
    _plan: list[Fault] = field(default_factory=list)
    _fail_after: tuple[int, Fault] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, *faults: Fault) -> None:
        with self._lock:
            self._plan.extend(faults)

    def fail_after(self, accepted: int, fault: Fault) -> None:
        """Accept `accepted` more requests, then answer every later one with `fault`."""
        with self._lock:
            self._fail_after = (len(self.batches) + accepted, fault)

    def heal(self) -> None:
        with self._lock:
            self._plan.clear()
            self._fail_after = None

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._plan:
                return self._plan.pop(0)
            if self._fail_after is not None and len(self.batches) >= self._fail_after[0]:
                return self._fail_after[1]
        return None

    @property
    def total_received(self) -> int:
        return sum(self.uuid_counts.values())


def _check_event(event: object) -> str | None:
    if not isinstance(event, dict):
        return "event is not an object"
    if not isinstance(event.get("event"), str) or not event["event"]:
        return "event name missing"
    if not isinstance(event.get("distinct_id"), str) or not event["distinct_id"].strip():
        return "distinct_id missing or empty"
    try:
        uuid.UUID(event.get("uuid"))
    except (TypeError, ValueError, AttributeError):
        return f"invalid uuid {event.get('uuid')!r}"
    if not isinstance(event.get("timestamp"), str):
        return "timestamp missing"
    if not isinstance(event.get("properties"), dict):
        return "properties missing"
    encoded = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    if len(encoded) + encoded.count(b'"') + encoded.count(b"\\") > MAX_EVENT_BYTES:
        return f"event {event['uuid']} over the per-event cap"
    return None


class _Handler(BaseHTTPRequestHandler):
    peer: PostHogPeer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        return

    def _answer(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, why: str) -> None:
        self.peer.violations.append(why)
        self._answer(status, json.dumps({"type": "validation_error", "detail": why}))

    def do_POST(self) -> None:  # noqa: N802
        peer = self.peer
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/flags/?v=2":
            peer.flag_checks += 1
            fault = peer._next_fault()
            if fault is not None and fault.status:
                return self._answer(fault.status, fault.body)
            try:
                key = json.loads(raw).get("api_key")
            except ValueError:
                return self._answer(400, "{}")
            if key != peer.api_key:
                return self._answer(401, json.dumps({"detail": "Project API key invalid."}))
            return self._answer(200, json.dumps({"flags": {}, "errorsWhileComputingFlags": False}))
        if self.path != "/batch/":
            return self._answer(404, "{}")
        peer.attempts.append(time.monotonic())
        fault = peer._next_fault()
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return self._answer(fault.status, fault.body, headers)
        if self.headers.get("Content-Encoding") != "gzip":
            return self._refuse(400, "body not gzip'd")
        try:
            body = gzip.decompress(raw)
        except OSError:
            return self._refuse(400, "bad gzip")
        if len(body) > MAX_REQUEST_BYTES:
            return self._refuse(413, f"request of {len(body)} bytes over 5 MiB")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return self._refuse(400, f"invalid JSON: {exc}")
        if payload.get("api_key") != peer.api_key:
            return self._answer(401, json.dumps({"detail": "Project API key invalid."}))
        if "sent_at" in payload:
            return self._refuse(400, "sent_at present")
        batch = payload.get("batch")
        if not isinstance(batch, list) or not batch:
            return self._refuse(400, "batch missing or empty")
        for event in batch:
            problem = _check_event(event)
            if problem:
                return self._refuse(400, problem)
        with peer._lock:
            for event in batch:
                peer.events[event["uuid"]] = event
                peer.uuid_counts[event["uuid"]] += 1
            peer.batches.append(Received(bool(payload.get("historical_migration")), len(batch), len(body),
                                         len(raw), time.monotonic()))
        self._answer(200, json.dumps({"status": 1}))


@pytest.fixture
def posthog_peer():
    """A running receiver on 127.0.0.1 (one per test)."""
    peer = PostHogPeer()
    handler = type("Handler", (_Handler,), {"peer": peer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    peer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield peer
    server.shutdown()
    server.server_close()
