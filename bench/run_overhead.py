"""What one Dagster run costs before it sends anything, to choose the PostHog/Mixpanel partition size.

    python -m bench.run_overhead [--runs 5]

Measures (a) a fresh process importing the code location (what every run worker does before its step
starts) and (b) materializing one partition of `posthog_export` whose window is empty, in process (the run's
own bookkeeping: partitions, integration, ClickHouse checks, state, events). It prints both and what they
add up to over a year of history: 8,760 runs with hourly partitions against 365 with daily ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time


def import_seconds(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import exports_pipeline.definitions"], check=True,
                       env={**os.environ}, capture_output=True)
        out.append(time.monotonic() - started)
    return out


def empty_run_seconds(runs: int) -> list[float]:
    import dagster as dg

    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.demo_peers import PostHogStandIn
    from exports_pipeline.engine.definitions import sink_objects
    from exports_pipeline.events.ddl import create_events_table
    from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client
    from exports_pipeline.resources.posthog import PostHogResource
    from exports_pipeline.sinks.posthog.plugin import PostHogSink
    from exports_pipeline.state.models import PostHogIntegration
    from exports_pipeline.state.store import StateStore

    home = tempfile.mkdtemp(prefix="run-overhead-")
    with chdb_client(f"{home}/chdb") as client:
        client.command("CREATE DATABASE bench")
        create_events_table(client, "bench.events_full")
    key = "ab" * 32
    peer = PostHogStandIn()
    state = StateStore(database_url=f"sqlite:///{home}/state.db")
    state.upsert_posthog_integration(PostHogIntegration(project_id="p", encrypted_posthog_api_key=SecretBox(key)
                                                        .encrypt("phc_bench"), posthog_host_name=peer.url))
    objects = sink_objects(PostHogSink(SecretBox(key)), partitions_start="2025-01-01", settle_minutes=15)
    resources = {"clickhouse": ClickHouseResource(url=f"chdb://{home}/chdb", events_table="bench.events_full"),
                 "state": state, "posthog": PostHogResource()}
    asset = dg.Definitions(**objects, resources=resources).get_assets_def("posthog_export")
    out = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("posthog_projects", ["p"])
        for i in range(runs):
            day = dt.date(2025, 3, 1) + dt.timedelta(days=i)
            started = time.monotonic()
            assert dg.materialize([asset], partition_key=f"{day}|p", instance=instance, resources=resources).success
            out.append(time.monotonic() - started)
    peer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    imports = statistics.median(import_seconds(args.runs))
    runs = statistics.median(empty_run_seconds(args.runs))
    per_run = imports + runs
    print(f"(a) importing the code location in a fresh process: {imports:.2f} s (median of {args.runs})")
    print(f"(b) one empty-window run, in process:               {runs:.2f} s (median of {args.runs})")
    for label, count in (("hourly partitions", 8760), ("daily partitions", 365)):
        print(f"a year of history with {label}: {count:,} runs x {per_run:.2f} s = "
              f"{count * per_run / 3600:.1f} h of run start-up before any event is sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
