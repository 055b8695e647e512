"""PostHog send speed and memory: the 1M-row day and the 4-day window, end to end, receiver included.

    python -m bench.posthog_send [--windows day,quad]

ClickHouse (chDB, `bench/prepare.py`'s data) -> `deliver_window` (mapping in SQL, requests cut from Arrow
buffers, gzip, 4 senders) -> HTTP -> a local receiver in its own process that accepts everything (it
reads and gunzips every body and counts its events, so its work is part of the figure). Each window runs
in a fresh process; the figure is `deliver_window`'s wall time and the process's peak RSS (`ru_maxrss`,
chDB's ≈300 MB included). One JSON line per window, then the RSS ratio quad/day.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BENCH_KEY = "phc_bench_key"


def serve(port_file: str) -> None:
    """The receiver: 200 for every `/batch/`, after gunzipping it and counting its events."""
    counts = {"events": 0, "requests": 0, "bytes": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            return

        def do_POST(self) -> None:  # noqa: N802
            body = gzip.decompress(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                counts["events"] += body.count(b'{"event":')
                counts["requests"] += 1
                counts["bytes"] += len(body)
            data = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file, "w") as fh:
        fh.write(str(server.server_address[1]))
    server.serve_forever()


def measure(window_name: str, url: str) -> dict:
    import logging

    from bench.prepare import PROJECT, WINDOWS, clickhouse
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.resources.posthog import PostHogResource
    from exports_pipeline.sinks.posthog.deliver import deliver_window
    from exports_pipeline.state.models import PostHogIntegration

    ch = clickhouse()
    ch.query("SELECT 1")  # warm-up: the engine's first start in this process
    integration = PostHogIntegration(project_id=PROJECT, encrypted_posthog_api_key=SecretBox("ab" * 32).encrypt(
        BENCH_KEY), posthog_host_name=url, project_name="bench")
    client = PostHogResource().client(url, BENCH_KEY)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    delivery = deliver_window(ch, client, integration, project_id=PROJECT, window=WINDOWS[window_name],
                              run_id="bench", historical=True, log=logging.getLogger("bench"),
                              langfuse_url="https://cloud.langfuse.com")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"window": window_name, **delivery.metadata(),
            "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0, 1),  # this process's (chDB's threads included)
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="day,quad")
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--one", metavar="WINDOW", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.one:
        print(json.dumps(measure(args.one, args.url)), flush=True)
        return 0

    from bench.prepare import OUT_DIR, exclusive_run, prepare

    with exclusive_run():
        prepare()
        port_file = os.path.join(OUT_DIR, "posthog_receiver.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        receiver = subprocess.Popen([sys.executable, "-m", "bench.posthog_send", "--serve", port_file])
        try:
            while not os.path.exists(port_file) or not open(port_file).read():
                threading.Event().wait(0.05)
            url = f"http://127.0.0.1:{open(port_file).read()}"
            results = {}
            for name in args.windows.split(","):
                out = subprocess.run([sys.executable, "-m", "bench.posthog_send", "--one", name, "--url", url],
                                     check=True, capture_output=True, text=True).stdout
                results[name] = json.loads(out.strip().splitlines()[-1])
                print(json.dumps(results[name]), flush=True)
            if "day" in results and "quad" in results:
                ratio = results["quad"]["peak_rss_mib"] / results["day"]["peak_rss_mib"]
                print(json.dumps({"peak_rss_quad_over_day": round(ratio, 3)}))
        finally:
            receiver.terminate()
            receiver.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
