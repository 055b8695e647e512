"""Send the prepared day (and the 4x window) to a local Mixpanel receiver; print events/s and peak RSS.

    python -m bench.mixpanel_send [--windows day,quad] [--max-in-flight N] [--gzip-level L]

End to end: ClickHouse (chDB) renders the events -> cut into requests -> gzip -> HTTP -> a count-only
receiver (`exports_pipeline_tests.mixpanel_peers`, its own process: gunzip, count lines, answer 200 like
Mixpanel's `num_records_imported`), exactly `deliver_window`, the sink's code path. Each window runs in
its own child process, so its peak RSS (`ru_maxrss`: interpreter, chDB, warm-up included) is its own;
the receiver's CPU competes for the same 2 cores, as the issue asks ("receiver included").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid

from bench.prepare import PROJECT, TABLE, WINDOWS, clickhouse, exclusive_run, load_marker, prepare

TARGET_EVENTS_PER_S = 30_000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(window: str, url: str, max_in_flight: int, gzip_level: int) -> dict:
    """One window in this process: the measurement a child prints as one JSON line."""
    from exports_pipeline.crypto import SecretBox, generate_key
    from exports_pipeline.resources.mixpanel import MixpanelResource
    from exports_pipeline.sinks.mixpanel.deliver import deliver_window
    from exports_pipeline.state.models import MixpanelIntegration

    marker = load_marker()
    rows = int(marker["windows"][window]["rows"])
    ch = clickhouse()
    with ch.client() as client:  # the engine's first start, as a long-lived worker would have had it
        client.command(f"SELECT count() FROM {TABLE}")
    box = SecretBox(generate_key())
    integration = MixpanelIntegration(PROJECT, box.encrypt("bench-token"), endpoint=url)
    resource_ = MixpanelResource(max_in_flight=max_in_flight, gzip_level=gzip_level)
    rss0, cpu0 = _peak_rss_mib(), _cpu_s()
    with resource_.client(integration, box) as mp:
        delivery = deliver_window(ch, mp, integration, project_id=PROJECT, window=WINDOWS[window],
                                  run_id=f"bench-{uuid.uuid4().hex[:8]}", historical=True)
    if delivery.events != rows or delivery.imported != rows:
        raise RuntimeError(f"{window}: sent {delivery.events}, imported {delivery.imported}, the window has {rows}")
    return {"window": window, "events": delivery.events, "requests": delivery.requests,
            "mb_json": round(delivery.bytes / 1e6, 1), "mb_gzip": round(delivery.bytes_sent / 1e6, 1),
            "seconds": round(delivery.seconds, 2), "events_per_s": round(delivery.events_per_second),
            "cpu_s": round(_cpu_s() - cpu0, 1), "rss_before_mib": round(rss0), "peak_rss_mib": round(_peak_rss_mib()),
            "events_cut": delivery.events_cut}


def _receiver() -> tuple[subprocess.Popen, str]:
    ready = os.path.join(tempfile.mkdtemp(prefix="mp-bench-"), "url")
    proc = subprocess.Popen([sys.executable, "-m", "exports_pipeline_tests.mixpanel_peers", "--ready-file", ready])
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the receiver did not start")
        time.sleep(0.05)
    with open(ready) as fh:
        return proc, fh.read().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="day,quad")
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--gzip-level", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: one window
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.url, args.max_in_flight, args.gzip_level)), flush=True)
        return 0
    with exclusive_run():
        prepare()
        proc, url = _receiver()
        results = []
        try:
            for window in args.windows.split(","):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.mixpanel_send", "--one", window, "--url", url,
                     "--max-in-flight", str(args.max_in_flight), "--gzip-level", str(args.gzip_level)],
                    check=True, capture_output=True, text=True,
                    env={**os.environ, "EXPORTS_BENCH_LOCK_HELD": str(os.getpid())})
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
        finally:
            proc.terminate()
            proc.wait()
    for r in results:
        verdict = "meets" if r["events_per_s"] >= TARGET_EVENTS_PER_S else "MISSES"
        print(f"{r['window']}: {r['events']:,} events in {r['seconds']} s = {r['events_per_s']:,} events/s "
              f"({verdict} {TARGET_EVENTS_PER_S:,}/s), peak RSS {r['peak_rss_mib']} MiB")
    if len(results) == 2:
        growth = results[1]["peak_rss_mib"] / results[0]["peak_rss_mib"] - 1
        print(f"peak RSS {results[0]['window']} -> {results[1]['window']}: {growth:+.1%} (target within 20%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
