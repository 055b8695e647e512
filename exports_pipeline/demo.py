"""`exports-pipeline demo`: the whole product on embedded defaults, end to end, in one command.

It uses the persistent Dagster instance under DAGSTER_HOME (default EXPORTS_HOME/dagster), so every
run it makes shows up afterwards in `make dev`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import dagster as dg

from exports_pipeline.settings import Settings, get_settings, store_generated_key

# Runs log to the instance (the UI shows everything); the terminal gets warnings and the summary tables.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DEMO_PROJECTS = 3
DEMO_DAYS = 3


def dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, or EXPORTS_HOME/dagster seeded with the repository's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    shipped = Path.cwd() / "dagster.yaml"
    if not config.exists() and shipped.exists():
        shutil.copyfile(shipped, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_encryption_key(settings: Settings) -> Settings:
    """The demo makes and keeps its own key, so a first run needs no setup."""
    if settings.encryption_key:
        return settings
    from exports_pipeline.crypto import generate_key

    path = store_generated_key(settings.home, generate_key())
    print(f"generated ENCRYPTION_KEY for the demo in {path} (0600)")
    get_settings.cache_clear()
    return get_settings()


def seed_if_empty(settings: Settings, events_per_day: int) -> None:
    from exports_pipeline.events.ddl import create_events_table
    from exports_pipeline.events.queries import qualified_table
    from exports_pipeline.events.seed import seed
    from exports_pipeline.resources.clickhouse import ClickHouseResource

    clickhouse = ClickHouseResource(url=settings.clickhouse_url, events_table=settings.events_table)
    with clickhouse.client() as client:
        create_events_table(client, settings.events_table)
        existing = int(client.command(f"SELECT count() FROM {qualified_table(settings.events_table)}"))
        if existing:
            print(f"events table {settings.events_table} already holds {existing:,} rows; reusing them")
            return
        stats = seed(client, settings.events_table, DEMO_PROJECTS, DEMO_DAYS, events_per_day)
    print(
        f"seeded {stats.rows_inserted:,} rows for {DEMO_PROJECTS} projects x {DEMO_DAYS} days "
        f"in {stats.seconds:.2f} s ({stats.rows_per_second:,.0f} rows/s)"
    )


DEMO_INTEGRATIONS = (
    # project, frequency, formats, compression
    ("proj-1", "daily", ("parquet", "csv"), "none"),
    ("proj-2", "hourly", ("jsonl",), "gzip"),
    ("proj-3", "daily", ("parquet", "csv"), "none"),
)


def configure_integrations(settings: Settings, state, bucket: Path) -> None:
    """The demo's exports, to a local directory standing in for the bucket."""
    from exports_pipeline.state.models import BlobIntegration

    bucket.mkdir(parents=True, exist_ok=True)
    for project, frequency, formats, compression in DEMO_INTEGRATIONS:
        state.upsert_blob_integration(BlobIntegration(
            project_id=project, type="LOCAL", bucket_name=str(bucket), export_frequency=frequency,
            file_types=formats, compression=compression, export_mode="FULL_HISTORY"))


def complete_windows(frequency: str, days: list) -> list[str]:
    """Time partition keys of the complete windows inside the seeded days."""
    keys = []
    for day in days:
        if frequency == "daily":
            keys.append(day.isoformat())
        else:
            keys.extend(f"{day.isoformat()}-{hour:02d}:00" for hour in range(24))
    return keys


def sync_posthog(defs, instance, resources, settings: Settings, days: list) -> list[dict]:
    """Sync proj-1 to a PostHog stand-in this process starts (`demo_peers`), one day partition per run, and
    print what arrived. The integration is disabled afterwards: the stand-in is gone when the demo ends."""
    from exports_pipeline.cli import print_table
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.demo_peers import PostHogStandIn
    from exports_pipeline.state.models import PostHogIntegration

    peer = PostHogStandIn()
    state = resources["state"]
    rows = []
    try:
        state.upsert_posthog_integration(PostHogIntegration(
            project_id="proj-1", encrypted_posthog_api_key=SecretBox(settings.require_encryption_key()).encrypt(
                "phc_demo_key"), posthog_host_name=peer.url, project_name="Demo project 1"))
        instance.add_dynamic_partitions("posthog_projects", ["proj-1"])
        job = defs.resolve_job_def("posthog_export_job")
        for day in days:
            key = f"{day.isoformat()}|proj-1"
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                            run_config=QUIET)
            mats = result.asset_materializations_for_node("posthog_export")
            if not result.success or not mats:
                print(f"{key}: PostHog run {result.run_id} failed")
                rows.append({"partition": key, "check": "FAIL"})
                continue
            meta = {k: v.value for k, v in mats[0].metadata.items()}
            checks = result.get_asset_check_evaluations()
            rows.append({"partition": key, "events": meta["events"], "requests": meta["requests"],
                         "bytes (gzip)": meta["bytes"], "events/s": meta["events_per_second"],
                         "historical": meta["historical_migration"],
                         "check": "pass" if checks and all(c.passed for c in checks) else "FAIL"})
    finally:
        peer.close()
        state.disable_posthog_integration("proj-1")
    print(f"\nPostHog sync of proj-1 to a local stand-in at {peer.url} ({len(rows)} day partitions through Dagster):")
    print_table(rows, ["partition", "events", "requests", "bytes (gzip)", "events/s", "historical", "check"])
    names = sorted({e["event"] for e in peer.events.values()})
    print(f"arrived: {len(peer.events):,} distinct events ({', '.join(names)}), {sum(peer.deliveries.values()):,} "
          f"deliveries in {peer.requests:,} requests; the integration is disabled now that the stand-in is gone")
    return rows


def run_demo(settings: Settings, events_per_day: int) -> int:
    from exports_pipeline.cli import print_table
    from exports_pipeline.definitions import build_definitions, build_resources
    from exports_pipeline.state.migrate import upgrade
    from exports_pipeline.urls import mask_url

    started = time.monotonic()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings = ensure_encryption_key(settings)
    seed_if_empty(settings, events_per_day)
    print(f"state database {mask_url(settings.database_url)} at revision {upgrade(settings.database_url)}")

    home = dagster_home(settings)
    instance = dg.DagsterInstance.from_config(str(home))
    defs = build_definitions(settings)
    resources = build_resources(settings)
    bucket = settings.home / "bucket"
    configure_integrations(settings, resources["state"], bucket)

    profile = defs.resolve_job_def("source_profile_job").execute_in_process(instance=instance, run_config=QUIET)
    if not profile.success:
        print("the source profile run failed")
        return 1
    records = [r.data for r in profile.asset_materializations_for_node("events_source_profile")[0]
               .metadata["profile"].records]
    print(f"\nevents_source_profile (run {profile.run_id}):")
    print_table(records, list(records[0]) if records else ["project_id"])
    days = sorted({dt.date.fromisoformat(r["day"]) for r in records})

    rows, failed = [], 0
    for project, frequency, _formats, _compression in DEMO_INTEGRATIONS:
        instance.add_dynamic_partitions(f"blob_storage_projects_{frequency}", [project])
        job = defs.resolve_job_def(f"blob_storage_export_{frequency}_job")
        for window in complete_windows(frequency, days):
            key = f"{window}|{project}"
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                            run_config=QUIET)
            mats = result.asset_materializations_for_node(f"blob_storage_export_{frequency}")
            checks = result.get_asset_check_evaluations()
            if not result.success or not mats:
                failed += 1
                print(f"{key}: run {result.run_id} failed")
                continue
            meta = {k: v.value for k, v in mats[0].metadata.items()}
            rows.append({"frequency": frequency, "partition": key, "rows": meta["dagster/partition_row_count"],
                         "files": meta["files"],
                         "bytes": meta["bytes"], "seconds": meta["seconds"], "rows/s": meta["rows_per_second"],
                         "check": "pass" if checks and all(c.passed for c in checks) else "FAIL"})
    print(f"\nobject-storage exports ({len(rows)} windows through Dagster; checks compare each manifest with "
          "ClickHouse):")
    daily = [r for r in rows if r["frequency"] == "daily"]
    hourly = [r for r in rows if r["frequency"] == "hourly"]
    print_table(daily + hourly[:6], ["partition", "rows", "files", "bytes", "seconds", "rows/s", "check"])
    if len(hourly) > 6:
        total = {k: sum(r[k] for r in hourly) for k in ("rows", "files", "bytes")}
        print(f"... and {len(hourly) - 6} more hourly windows; all {len(hourly)} hourly windows: "
              f"{total['rows']:,} rows, {total['files']:,} files, {total['bytes']:,} bytes")
    print(f"\nfiles are under {bucket} (one folder per project/frequency/window, manifest.json written last)")
    posthog_rows = sync_posthog(defs, instance, resources, settings, days)
    failed += sum(1 for r in posthog_rows if r["check"] == "FAIL")
    batch_ok = demo_batch_export(settings, resources["state"], instance)
    bad_checks = [r["partition"] for r in rows if r["check"] != "pass"]
    print(f"demo finished in {time.monotonic() - started:.1f} s; `make dev` shows these runs at http://127.0.0.1:3000")
    return 1 if failed or bad_checks or not batch_ok else 0


# Generations of one environment that cost something, as Langfuse's events table would send the filter.
DEMO_BATCH_FILTER = (
    '[{"column":"environment","type":"stringOptions","operator":"any of","value":["production"]},'
    '{"column":"type","type":"stringOptions","operator":"any of","value":["GENERATION"]},'
    '{"column":"totalCost","type":"number","operator":">","value":0}]'
)


def demo_batch_export(settings: Settings, state, instance) -> bool:
    """One filtered batch export, run as `batch-export create --run` runs it; prints rows, file and link."""
    from exports_pipeline.batch_export.defs import submit_and_run
    from exports_pipeline.batch_export.request import BatchRequest
    from exports_pipeline.commands.batch_export import describe

    request = BatchRequest(project_id="proj-1", format="csv", filter=DEMO_BATCH_FILTER,
                           name="demo production generations with cost", user_id="demo")
    export = submit_and_run(settings, state, request, instance)
    print("\nbatch export (production GENERATIONs of proj-1 with totalCost > 0, CSV; "
          "`exports-pipeline batch-export create ... --run`):")
    for key, value in describe(export):
        print(f"  {key:<13} {value}")
    if export.status == "COMPLETED":
        print(f"  get it:       {export.url}  (again: `exports-pipeline batch-export url {export.id}`)")
    return export.status == "COMPLETED"
