"""A local Mixpanel `/import` receiver that enforces the documented contract (a pytest plugin of the root
conftest), and a fast one for the bench (`python -m exports_pipeline_tests.mixpanel_peers --port N`).

Contract (docs.mixpanel.com/reference/import-events): POST /import?strict=1, Basic auth with the project token
(empty password) or a service account with `project_id`; gzip'd JSON array or NDJSON; at most 2,000 events and
10 MB uncompressed per request (413 above the size); each event an object with `event`, `properties.time`
(seconds or milliseconds, 1971-01-01 to now + 1 h), `properties.distinct_id` (a string, "" allowed, not one
of the disallowed values), `properties.$insert_id` (<= 36 bytes of [A-Za-z0-9-], not a disallowed value),
under 1 MB, fewer than 255 properties, nested objects fewer than 255 keys and depth <= 3, arrays fewer than
255 elements, valid UTF-8. Invalid events come back in `failed_records` of a 400 while the valid ones are
kept (strict=1). Strings over 255 characters are truncated by Mixpanel, not refused: counted here, so tests
can prove the sink cut them first.

Faults are scripted per request: `peer.script(Fault(status=429, retry_after="1"), ...)`, `Fault(drop=True)`
closes the connection without an answer, `Fault(delay=s)` answers late (a client timeout).
"""

from __future__ import annotations

import argparse
import base64
import collections
import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

TOKEN = "mp-test-token-7f3a"
SA_USER = "exports.sa.1234"
SA_SECRET = "sa-secret-9b2c"
SA_PROJECT_ID = "4242"

MAX_EVENTS = 2_000
MAX_BYTES = 10_000_000
MAX_EVENT_BYTES = 1_000_000
# Mixpanel's documented disallowed values for distinct_id and $insert_id (Langfuse adds `lmy47d` on its side).
DISALLOWED = frozenset({
    "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null", "n/a", "na", "undefined",
    "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
})
_INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
_MIN_TIME_S = 31_536_000  # 1971-01-01T00:00:00Z


@dataclass
class Fault:
    status: int = 503
    retry_after: str | None = None
    body: dict | None = None
    drop: bool = False
    delay: float = 0.0


@dataclass
class Received:
    """What the receiver saw: every accepted event (by $insert_id, duplicates kept) and every request."""

    events: dict[str, list[dict]] = field(default_factory=lambda: collections.defaultdict(list))
    requests: list[dict] = field(default_factory=list)
    truncated_strings: int = 0

    def all_events(self) -> list[dict]:
        return [e for copies in self.events.values() for e in copies]


class MixpanelPeer:
    def __init__(self, *, validate: bool = True) -> None:
        self.validate = validate
        self.received = Received()
        self._faults: collections.deque[Fault] = collections.deque()
        self._lock = threading.Lock()
        self.lines_total = 0  # count-only mode (bench)
        handler = type("Handler", (_Handler,), {"peer": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> MixpanelPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, *faults: Fault) -> None:
        """The next requests get these answers, in order, before the receiver answers normally again."""
        with self._lock:
            self._faults.extend(faults)

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    # ------------------------------------------------------------------------------------ the contract

    def handle(self, method: str, target: str, headers, body: bytes) -> tuple[int, dict, dict]:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        record = {"at": time.monotonic(), "path": parts.path, "query": query, "bytes": len(body)}
        with self._lock:
            self.received.requests.append(record)
        if method != "POST" or parts.path != "/import":
            return 404, {}, {"error": "not found"}
        auth = self._auth(headers.get("Authorization", ""), query)
        if auth:
            return auth
        if query.get("strict") != "1":
            return 400, {}, {"code": 400, "error": "test receiver: strict=1 is required", "status": "Bad Request"}
        if headers.get("Content-Encoding") != "gzip":
            return 400, {}, {"code": 400, "error": "test receiver: gzip is required", "status": "Bad Request"}
        try:
            data = gzip.decompress(body)
        except (OSError, EOFError):
            return 400, {}, {"code": 400, "error": "body is not gzip", "status": "Bad Request"}
        if len(data) > MAX_BYTES:
            return 413, {}, {"code": 413, "error": f"request exceeds max limit of {MAX_BYTES} bytes",
                             "status": "Request Entity Too Large"}
        ctype = headers.get("Content-Type", "").split(";")[0].strip()
        try:
            text = data.decode("utf-8")
            if ctype == "application/x-ndjson":
                events = [json.loads(line) for line in text.split("\n") if line.strip()]
            elif ctype == "application/json":
                events = json.loads(text)
                events = events if isinstance(events, list) else [events]
            else:
                return 400, {}, {"code": 400, "error": f"unsupported Content-Type {ctype!r}", "status": "Bad Request"}
        except (UnicodeDecodeError, ValueError) as exc:
            return 400, {}, {"code": 400, "error": f"invalid body: {exc}", "status": "Bad Request"}
        record["events"] = len(events)
        if len(events) > MAX_EVENTS:
            return 400, {}, {"code": 400, "error": f"more than {MAX_EVENTS} events", "status": "Bad Request"}
        failed, kept = [], []
        for index, event in enumerate(events):
            problem = _check(event)
            if problem:
                props = event.get("properties") if isinstance(event, dict) else None
                failed.append({"index": index, "$insert_id": (props or {}).get("$insert_id", ""),
                               "field": problem[0], "message": problem[1]})
            else:
                kept.append(event)
        with self._lock:
            for event in kept:
                self.received.truncated_strings += _long_strings(event["properties"])
                self.received.events[event["properties"]["$insert_id"]].append(event)
        if failed:
            return 400, {}, {"code": 400, "error": "some data points in the request failed validation",
                             "failed_records": failed, "num_records_imported": len(kept), "status": "Bad Request"}
        return 200, {}, {"code": 200, "num_records_imported": len(kept), "status": "OK"}

    def _auth(self, header: str, query: dict) -> tuple[int, dict, dict] | None:
        refused = (401, {}, {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"})
        if not header.startswith("Basic "):
            return refused
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return refused
        if "project_id" in query:
            if (user, password) != (SA_USER, SA_SECRET):
                return refused
            if query["project_id"] != SA_PROJECT_ID:
                return 403, {}, {"code": 403, "error": "service account has no access to this project",
                                 "status": "Forbidden"}
            return None
        return None if (user, password) == (TOKEN, "") else refused


def _check(event: object) -> tuple[str, str] | None:
    """(field, message) of the first rule the event breaks, else None."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str) or not event["event"]:
        return "event", "'event' must be a non-empty string"
    props = event.get("properties")
    if not isinstance(props, dict):
        return "properties", "'properties' must be an object"
    if len(json.dumps(event, ensure_ascii=False).encode()) >= MAX_EVENT_BYTES:
        return "properties", "event exceeds 1MB"
    if len(props) >= 255:
        return "properties", "event has 255 or more properties"
    t = props.get("time")
    if not isinstance(t, int | float) or isinstance(t, bool):
        return "properties.time", "'properties.time' is required"
    seconds = t / 1000 if t > 1e11 else t
    if seconds < _MIN_TIME_S:
        return "properties.time", "'properties.time' is invalid: before 1971-01-01"
    if seconds > time.time() + 3600:
        return "properties.time", "'properties.time' is more than 1 hour in the future"
    distinct_id = props.get("distinct_id")
    if not isinstance(distinct_id, str):
        return "properties.distinct_id", "'properties.distinct_id' must be a string"
    if distinct_id.strip().lower() in DISALLOWED:
        return "properties.distinct_id", f"'properties.distinct_id' is a disallowed value: {distinct_id!r}"
    insert_id = props.get("$insert_id")
    if not isinstance(insert_id, str) or not _INSERT_ID.fullmatch(insert_id) or insert_id.lower() in DISALLOWED:
        return "properties.$insert_id", "'properties.$insert_id' must be <= 36 bytes of [A-Za-z0-9-]"
    return _check_nested(props, "properties", 0)


def _check_nested(value: object, path: str, depth: int) -> tuple[str, str] | None:
    if isinstance(value, dict):
        if depth > 3:
            return path, "nesting deeper than 3"
        if depth > 0 and len(value) >= 255:
            return path, "object with 255 or more keys"
        for key, item in value.items():
            problem = _check_nested(item, f"{path}.{key}", depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        if len(value) >= 255:
            return path, "array with 255 or more elements"
        for item in value:
            problem = _check_nested(item, path, depth + 1)
            if problem:
                return problem
    return None


def _long_strings(value: object) -> int:
    if isinstance(value, str):
        return int(len(value) > 255)
    if isinstance(value, dict):
        return sum(_long_strings(v) for v in value.values())
    if isinstance(value, list):
        return sum(_long_strings(v) for v in value)
    return 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peer: MixpanelPeer

    def log_message(self, *args: object) -> None:  # quiet
        return

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def _serve(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.peer.next_fault()
        if fault is not None and fault.drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault is not None:
            time.sleep(fault.delay)
            status, headers = fault.status, {"Retry-After": fault.retry_after} if fault.retry_after else {}
            payload = fault.body or {"code": fault.status, "error": "injected by the test receiver"}
            with self.peer._lock:
                self.peer.received.requests.append({"at": time.monotonic(), "fault": fault.status})
        elif not self.peer.validate:
            status, headers, payload = self._count_only(body)
        else:
            status, headers, payload = self.peer.handle(method, self.path, self.headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _count_only(self, body: bytes) -> tuple[int, dict, dict]:
        """The bench's receiver: accepts everything, counts events (gunzip + newlines, no JSON parsing)."""
        data = gzip.decompress(body)
        n = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        with self.peer._lock:
            self.peer.lines_total += n
        return 200, {}, {"code": 200, "num_records_imported": n, "status": "OK"}


@pytest.fixture
def mixpanel_peer() -> Iterator[MixpanelPeer]:
    """A contract-enforcing Mixpanel receiver on a free local port, for one test."""
    peer = MixpanelPeer().start()
    yield peer
    peer.stop()


def main() -> None:
    """Serve the count-only receiver until killed (the bench runs it in its own process)."""
    parser = argparse.ArgumentParser(description="count-only Mixpanel /import receiver")
    parser.add_argument("--ready-file", required=True, help="write the URL here once listening")
    args = parser.parse_args()
    peer = MixpanelPeer(validate=False)
    with open(args.ready_file + ".tmp", "w") as fh:
        fh.write(peer.url)
    import os

    os.replace(args.ready_file + ".tmp", args.ready_file)
    peer.server.serve_forever()


if __name__ == "__main__":
    main()
