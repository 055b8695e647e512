"""A local stand-in for PostHog that the demo (and the run-overhead bench) sends to: it accepts `/batch/`
(gzip or plain JSON) and counts events by uuid, so `make demo` can show what arrived without the network.
The contract-enforcing receiver the tests use is `exports_pipeline_tests/posthog_peers.py`."""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PostHogStandIn:
    def __init__(self) -> None:
        self.events: dict[str, dict] = {}
        self.deliveries: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                """Quiet: the demo prints a summary instead."""

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                payload = json.loads(body or b"{}")
                with owner._lock:
                    owner.requests += 1
                    for event in payload.get("batch", []):
                        owner.events[event["uuid"]] = event
                        owner.deliveries[event["uuid"]] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": 1}')

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
