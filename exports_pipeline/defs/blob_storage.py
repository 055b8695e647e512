"""Scheduled exports to object storage: one asset, job and schedule per frequency, the sensor that
keeps the `project` dimension equal to the enabled integrations and plans their history, and the
late-rows sensor (`defs/late_rows.py`) that re-exports recent windows whose source changed.

Follow one window: `blob_storage_export_<frequency>` -> `export.partition.export_partition`
-> `export.blob.export_window` -> `ClickHouseResource` and the `ObjectStore`.
"""


import datetime as dt
import hashlib
import json

import dagster as dg
from dagster import AssetExecutionContext, SensorEvaluationContext

from exports_pipeline.crypto import SecretBox
from exports_pipeline.errors import ConfigError, CustomerFault, DeploymentFault
from exports_pipeline.events.queries import WINDOW_FILTER, qualified_table
from exports_pipeline.export.partition import export_partition, history_start
from exports_pipeline.export.windows import FREQUENCIES, FREQUENCY_STEP, Window, window_floor, window_starts
from exports_pipeline.defs.late_rows import build_late_rows_sensor
from exports_pipeline.defs.partitions import export_partitions, project_and_window, project_partitions
from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import get_settings
from exports_pipeline.state.models import SINK_BLOB
from exports_pipeline.state.store import StateStore

SINK = SINK_BLOB  # the name of the sink: pool, run tag, cursor family
# The tag names the sink on runs launched through a job (schedules, sensors, the job's partitions page),
# for filtering. The per-sink concurrency limit is the asset's `pool` instead: runs of an asset selection
# (the asset page's Materialize and backfill dialogs) carry no job tags, and assets cannot give runs tags
# (dagster-io/dagster#15752), while a pool applies however the run was launched (dagster.yaml sets
# `concurrency.pools.granularity: run`).
SINK_TAG = {"exports/sink": SINK}
ROW_COUNT_CHECK = "manifest_row_count_matches_source"
# Transient faults (timeouts, 5xx, SlowDown, a dropped ClickHouse connection, an S3 server gone for a
# while) are retried with exponential backoff: 10, 30, 70 s, each +-10 s of jitter. Not full jitter: that
# draws each wait from [0, 10|30|70] s and can spend all three retries within seconds of a failure, so a
# 30-second outage would fail the run; +-10 s still spreads runs that failed together, and the retries
# always span at least 80 s. Customer and deployment faults raise Failure(allow_retries=False).
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL,
                              jitter=dg.Jitter.PLUS_MINUS)
MAX_HISTORY_REQUESTS_PER_TICK = 24


def asset_name(frequency: str) -> str:
    return f"blob_storage_export_{frequency}"


def _secret_box() -> SecretBox | None:
    key = get_settings().encryption_key
    return SecretBox(key) if key else None


def build_export_asset(frequency: str, partitions_start: str) -> dg.AssetsDefinition:
    name = asset_name(frequency)

    @dg.asset(
        name=name,
        partitions_def=export_partitions(frequency, partitions_start),
        group_name="object_storage",
        kinds={"clickhouse", "s3"},
        retry_policy=RETRY_POLICY,
        pool=SINK,
        op_tags=SINK_TAG,
        check_specs=[dg.AssetCheckSpec(ROW_COUNT_CHECK, asset=name,
                                       description="The manifest's row count equals ClickHouse's count for the window")],
        description=f"Langfuse events of one project and one {frequency} window, in every configured format, "
        "with a manifest written last, in the project's bucket or directory.",
    )
    def _export(context: AssetExecutionContext, clickhouse: ClickHouseResource,
                object_store: ObjectStoreResource, state: StateStore):
        project_id, start, end = project_and_window(context.assets_def.partitions_def, context.partition_key)
        window = Window(start, end)
        try:
            outcome = export_partition(
                clickhouse=clickhouse, object_store=object_store, state=state, box=_secret_box(),
                frequency=frequency, project_id=project_id, window=window,
                partition_key=str(context.partition_key), run_id=context.run_id, log=context.log.info,
            )
        except DeploymentFault as exc:
            raise dg.Failure(description=f"{type(exc).__name__}: {exc} (fix {exc.setting or 'the deployment'} "
                             f"of this deployment, then re-run; the integration of {project_id} stays enabled)",
                             metadata={"setting": exc.setting or ""}, allow_retries=False) from None
        except (CustomerFault, ConfigError) as exc:
            raise dg.Failure(description=f"{type(exc).__name__}: {exc} (the integration was disabled; fix it and "
                             "run `exports-pipeline integrations enable`)", allow_retries=False) from None
        if not outcome.exported:
            # Nothing was written: the partition must not show as materialized, and the run says why.
            context.instance.add_run_tags(context.run_id, {"exports/skipped": outcome.reason[:250]})
            raise dg.Failure(description=f"nothing exported for {context.partition_key}: {outcome.reason}",
                             metadata={"skipped": outcome.reason}, allow_retries=False)
        result = outcome.result
        source_now = _count_window(clickhouse, project_id, window, context.run_id)
        per_format = {fmt: sum(f.rows for f in result.files if f.format == fmt) for fmt in result.manifest["formats"]}
        passed = result.rows == source_now and all(n == result.rows for n in per_format.values())
        yield dg.MaterializeResult(
            metadata={
                "dagster/partition_row_count": result.rows,
                "dagster/uri": result.manifest_uri,
                "bytes": result.bytes,
                "files": len(result.files),
                "seconds": round(result.seconds, 3),
                "rows_per_second": round(result.rows / result.seconds, 1) if result.seconds else 0.0,
                "formats": ", ".join(result.manifest["formats"]),
                "stale_objects_deleted": len(result.deleted_stale),
                # the columns written (the deployed table's) and the registry columns it lacks, as in the manifest
                "dagster/column_schema": dg.TableSchema(columns=[
                    dg.TableColumn(c["name"], c["type"]) for c in result.manifest["columns"]]),
                "missing_columns": dg.MetadataValue.json(result.manifest["missing_columns"]),
            },
            check_results=[dg.AssetCheckResult(
                check_name=ROW_COUNT_CHECK, passed=passed,
                metadata={"manifest_row_count": result.rows, "clickhouse_row_count": source_now,
                          **{f"{fmt}_file_rows": n for fmt, n in per_format.items()}},
            )],
        )

    return _export


def _count_window(clickhouse: ClickHouseResource, project_id: str, window: Window, run_id: str) -> int:
    sql = f"SELECT count() FROM {qualified_table(clickhouse.events_table)} FINAL WHERE {WINDOW_FILTER}"
    return int(clickhouse.query(sql, {"project_id": project_id, "start": window.start, "end": window.end},
                                tags=query_tags(run=run_id, check=ROW_COUNT_CHECK))[0][0])


def build_job(frequency: str, asset: dg.AssetsDefinition):
    return dg.define_asset_job(f"{asset_name(frequency)}_job", selection=[asset], tags=SINK_TAG,
                               partitions_def=asset.partitions_def)


def build_schedule(frequency: str, job, settle_minutes: int) -> dg.ScheduleDefinition:
    """Fire `settle_minutes` after each window ends, one run per project (run key = partition key)."""
    if frequency == "hourly":
        minute = min(settle_minutes, 59)
        return dg.build_schedule_from_partitioned_job(job, name=f"{asset_name(frequency)}_schedule", minute_of_hour=minute,
                                                      default_status=dg.DefaultScheduleStatus.RUNNING)
    hour, minute = divmod(min(settle_minutes, 23 * 60 + 59), 60)
    kwargs = {"day_of_week": 1} if frequency == "weekly" else {}
    return dg.build_schedule_from_partitioned_job(job, name=f"{asset_name(frequency)}_schedule", hour_of_day=hour,
                                                  minute_of_hour=minute,
                                                  default_status=dg.DefaultScheduleStatus.RUNNING, **kwargs)


# ------------------------------------------------------------------------------------------ the sensor


def plan_id(integration) -> str:
    """Identifies an integration's history plan; changing its mode or start date changes it."""
    raw = f"{integration.export_mode}|{integration.export_start_date.isoformat() if integration.export_start_date else ''}"
    return hashlib.sha256(raw.encode()).hexdigest()[:10]


def plan_history_requests(*, frequency: str, integrations, first_window: dict, partitions_start: dt.datetime,
                          now: dt.datetime, settle: dt.timedelta, cursor: dict, limit: int, time_fmt: str,
                          job_name: str, materialized: frozenset[str] = frozenset()) -> tuple[list[dg.RunRequest], dict]:
    """Run requests for the history the integrations still need, oldest window first, at most `limit`.

    Per project the cursor holds the plan id, the next window to request and the end of the history
    (frozen when the plan starts: later windows are the schedule's). Every request's run key carries
    the plan id and the partition key, so it is never made twice; a new plan re-requests its windows.
    Windows already materialized (by the schedule, a backfill or a hand launch) are passed over.
    """
    new_cursor: dict = {}
    candidates: list[tuple[dt.datetime, str, str]] = []
    for integration in integrations:
        project = integration.project_id
        pid = plan_id(integration)
        entry = cursor.get(project)
        if entry is None or entry.get("plan") != pid:
            start = first_window.get(project)
            if start is None:  # FULL_HISTORY on a project with no events yet: nothing, ask again later
                continue
            entry = {"plan": pid, "next": max(start, partitions_start).isoformat(),
                     "until": window_floor(now - settle, frequency).isoformat()}
        new_cursor[project] = entry
        starts = window_starts(dt.datetime.fromisoformat(entry["next"]), dt.datetime.fromisoformat(entry["until"]),
                               frequency)
        candidates.extend((s, project, pid) for s in starts)
    candidates.sort()
    requests = []
    for start, project, pid in candidates:
        key = dg.MultiPartitionKey({"date": start.strftime(time_fmt), "project": project})
        if str(key) not in materialized:
            if len(requests) == limit:
                break
            requests.append(dg.RunRequest(run_key=f"history:{pid}:{key}", partition_key=key, job_name=job_name,
                                          tags={**SINK_TAG, "exports/reason": "history", "exports/project": project}))
        new_cursor[project] = {**new_cursor[project], "next": (start + FREQUENCY_STEP[frequency]).isoformat()}
    return requests, new_cursor


def build_integrations_sensor(jobs: dict, assets: dict, partitions_start: str,
                              settle_minutes: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="blob_storage_integrations_sensor",
        jobs=list(jobs.values()),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Keeps each frequency's project dimension equal to its enabled integrations and requests "
        "the history each integration needs, oldest window first.",
    )
    def _sensor(context: SensorEvaluationContext, clickhouse: ClickHouseResource, state: StateStore):
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = dt.datetime.now(dt.UTC)
        all_requests, dynamic_requests, new_cursor = [], [], {}
        for frequency in FREQUENCIES:
            enabled = state.list_blob_integrations(enabled=True, frequency=frequency)
            projects = project_partitions(frequency)
            current = set(context.instance.get_dynamic_partitions(projects.name))
            wanted = {i.project_id for i in enabled}
            if wanted - current:
                dynamic_requests.append(projects.build_add_request(sorted(wanted - current)))
            if current - wanted:
                dynamic_requests.append(projects.build_delete_request(sorted(current - wanted)))
            freq_cursor = cursor.get(frequency, {})
            first_window = {}
            for integration in enabled:
                if freq_cursor.get(integration.project_id, {}).get("plan") != plan_id(integration):
                    first_window[integration.project_id] = history_start(integration, clickhouse)
            time_def = assets[frequency].partitions_def.primary_dimension.partitions_def
            requests, new_cursor[frequency] = plan_history_requests(
                frequency=frequency, integrations=enabled, first_window=first_window,
                partitions_start=dt.datetime.fromisoformat(partitions_start).replace(tzinfo=dt.UTC), now=now,
                settle=dt.timedelta(minutes=settle_minutes), cursor=freq_cursor,
                limit=MAX_HISTORY_REQUESTS_PER_TICK - len(all_requests), time_fmt=time_def.fmt,
                job_name=jobs[frequency].name,
                materialized=frozenset(context.instance.get_materialized_partitions(assets[frequency].key)),
            )
            all_requests.extend(requests)
        return dg.SensorResult(run_requests=all_requests, dynamic_partitions_requests=dynamic_requests,
                               cursor=json.dumps(new_cursor, sort_keys=True))

    return _sensor


def build_blob_storage_defs(partitions_start: str, settle_minutes: int, *, late_rows_lookback_hours: int = 72,
                            late_rows_interval_seconds: int = 900, clock=None) -> dict:
    """Assets, jobs, schedules and sensors of object-storage exports; `clock` (a callable returning an aware
    datetime) is "now" for the late-rows sensor, the wall clock by default."""
    assets = {f: build_export_asset(f, partitions_start) for f in FREQUENCIES}
    jobs = {f: build_job(f, assets[f]) for f in FREQUENCIES}
    schedules = [build_schedule(f, jobs[f], settle_minutes) for f in FREQUENCIES]
    sensors = [
        build_integrations_sensor(jobs, assets, partitions_start, settle_minutes),
        build_late_rows_sensor(jobs, assets, partitions_start=partitions_start, settle_minutes=settle_minutes,
                               lookback_hours=late_rows_lookback_hours, interval_seconds=late_rows_interval_seconds,
                               run_tags=SINK_TAG, secret_box=_secret_box, clock=clock),
    ]
    return {"assets": list(assets.values()), "jobs": list(jobs.values()), "schedules": schedules, "sensors": sensors}
