"""The Dagster objects of a windowed sink: one asset, job and schedule per frequency, built the same way
for every sink from its plug-in (`engine.sink.WindowedSink`).

Follow one window: the sink's asset -> `engine.runner.run_window` -> the plug-in's `deliver` -> resources.
"""


import datetime as dt

import dagster as dg
from dagster import AssetExecutionContext

from exports_pipeline.engine.partitions import project_and_window, window_partitions
from exports_pipeline.engine.runner import run_window
from exports_pipeline.engine.sink import WindowedSink
from exports_pipeline.errors import ConfigError, CustomerFault, DeploymentFault
from exports_pipeline.events.queries import WINDOW_FILTER, qualified_table
from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags
from exports_pipeline.windows import Window

# Transient faults (timeouts, 5xx, SlowDown, a dropped ClickHouse connection, a server gone for a while)
# are retried with exponential backoff: 10, 30, 70 s, each +-10 s of jitter. Not full jitter: that draws
# each wait from [0, 10|30|70] s and can spend all three retries within seconds of a failure, so a
# 30-second outage would fail the run; +-10 s still spreads runs that failed together, and the retries
# always span at least 80 s. Customer and deployment faults raise Failure(allow_retries=False).
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL,
                              jitter=dg.Jitter.PLUS_MINUS)
SINK_TAG_KEY = "exports/sink"
#: What failed a window's run, as the engine sorts it: `transient`, `deployment` or `customer`. A run whose
#: step retries a transient fault to the end is requested again by the late-rows sensor (`late_rows.py`).
FAULT_TAG = "exports/fault"
SKIPPED_TAG = "exports/skipped"  # a run that delivered nothing, and why (integration disabled, not settled...)


def sink_tags(sink: WindowedSink) -> dict[str, str]:
    """The tag naming the sink on runs launched through a job (schedules, sensors, the job's partitions
    page), for filtering. The per-sink concurrency limit is the asset's `pool` instead: runs of an asset
    selection carry no job tags (dagster-io/dagster#15752), while a pool applies however the run was
    launched (dagster.yaml sets `concurrency.pools.granularity: run`)."""
    return {SINK_TAG_KEY: sink.name}


def build_window_asset(sink: WindowedSink, frequency: str, partitions_start: str, settle_minutes: int
                       ) -> dg.AssetsDefinition:
    name = sink.asset_name(frequency)
    settle = dt.timedelta(minutes=settle_minutes)

    @dg.asset(
        name=name,
        partitions_def=window_partitions(sink, frequency, partitions_start),
        group_name=sink.group,
        kinds=set(sink.kinds),
        retry_policy=RETRY_POLICY,
        pool=sink.name,
        op_tags=sink_tags(sink),
        required_resource_keys={"clickhouse", "state", *sink.resource_keys},
        check_specs=[dg.AssetCheckSpec(sink.check_name, asset=name, description=sink.check_description)],
        description=sink.asset_description(frequency),
    )
    def _deliver(context: AssetExecutionContext):
        clickhouse: ClickHouseResource = context.resources.clickhouse
        state = context.resources.state
        resources = {key: getattr(context.resources, key) for key in sink.resource_keys}
        project_id, start, end = project_and_window(context.assets_def.partitions_def, context.partition_key)
        try:
            outcome = run_window(sink, clickhouse=clickhouse, state=state, resources=resources,
                                 frequency=frequency, project_id=project_id, window=Window(start, end),
                                 partition_key=str(context.partition_key), run_id=context.run_id,
                                 settle=settle, log=context.log.info)
        except DeploymentFault as exc:
            context.instance.add_run_tags(context.run_id, {FAULT_TAG: "deployment"})
            raise dg.Failure(description=f"{type(exc).__name__}: {exc} (fix {exc.setting or 'the deployment'} "
                             f"of this deployment, then re-run; the integration of {project_id} stays enabled)",
                             metadata={"setting": exc.setting or ""}, allow_retries=False) from None
        except (CustomerFault, ConfigError) as exc:
            context.instance.add_run_tags(context.run_id, {FAULT_TAG: "customer"})
            raise dg.Failure(description=f"{type(exc).__name__}: {exc} (the integration was disabled; fix it and "
                             "run `exports-pipeline integrations enable`)", allow_retries=False) from None
        except Exception:  # transient by the engine's sorting: RETRY_POLICY retries the step
            context.instance.add_run_tags(context.run_id, {FAULT_TAG: "transient"})
            raise
        if not outcome.exported:
            # Nothing was delivered: the partition must not show as materialized, and the run says why.
            context.instance.add_run_tags(context.run_id, {SKIPPED_TAG: outcome.reason[:250]})
            raise dg.Failure(description=f"nothing exported for {context.partition_key}: {outcome.reason}",
                             metadata={"skipped": outcome.reason}, allow_retries=False)
        delivered = outcome.delivered
        source_now = count_window(clickhouse, project_id, outcome.span, context.run_id, sink.check_name)
        metadata = {
            "dagster/partition_row_count": delivered.rows,
            **({"dagster/uri": delivered.uri} if delivered.uri else {}),
            **delivered.metadata,
            "seconds": round(delivered.seconds, 3),
            "rows_per_second": round(delivered.rows / delivered.seconds, 1) if delivered.seconds else 0.0,
        }
        yield dg.MaterializeResult(
            metadata=metadata,
            check_results=[dg.AssetCheckResult(
                check_name=sink.check_name, passed=delivered.rows == source_now and delivered.consistent,
                metadata={**delivered.check_metadata, "clickhouse_row_count": source_now},
            )],
        )

    return _deliver


def count_window(clickhouse: ClickHouseResource, project_id: str, window: Window, run_id: str, check: str) -> int:
    """ClickHouse's count (FINAL, the delivery's own filter) of a window, for the row-count checks."""
    sql = f"SELECT count() FROM {qualified_table(clickhouse.events_table)} FINAL WHERE {WINDOW_FILTER}"
    return int(clickhouse.query(sql, {"project_id": project_id, "start": window.start, "end": window.end},
                                tags=query_tags(run=run_id, check=check))[0][0])


def build_job(sink: WindowedSink, frequency: str, asset: dg.AssetsDefinition):
    return dg.define_asset_job(sink.job_name(frequency), selection=[asset], tags=sink_tags(sink),
                               partitions_def=asset.partitions_def)


def build_schedule(sink: WindowedSink, frequency: str, job, settle_minutes: int) -> dg.ScheduleDefinition:
    """Whole-window sinks: fire `settle_minutes` after each window ends, one run per project (run key =
    partition key). Sinks that continue the open window: every hour, `settle_minutes` past it, one run of
    the window that holds the newly settled hour, per project."""
    name = sink.schedule_name(frequency)
    if sink.continues_open_window:
        return _hourly_open_window_schedule(sink, frequency, job, settle_minutes, name)
    if frequency == "hourly":
        minute = min(settle_minutes, 59)
        return dg.build_schedule_from_partitioned_job(job, name=name, minute_of_hour=minute,
                                                      default_status=dg.DefaultScheduleStatus.RUNNING)
    hour, minute = divmod(min(settle_minutes, 23 * 60 + 59), 60)
    kwargs = {"day_of_week": 1} if frequency == "weekly" else {}
    return dg.build_schedule_from_partitioned_job(job, name=name, hour_of_day=hour, minute_of_hour=minute,
                                                  default_status=dg.DefaultScheduleStatus.RUNNING, **kwargs)


def _hourly_open_window_schedule(sink: WindowedSink, frequency: str, job, settle_minutes: int,
                                 name: str) -> dg.ScheduleDefinition:
    from exports_pipeline.engine.partitions import partition_key, project_partitions
    from exports_pipeline.windows import window_floor

    settle = dt.timedelta(minutes=settle_minutes)
    minute = settle_minutes % 60

    @dg.schedule(name=name, job=job, cron_schedule=f"{minute} * * * *", execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Every hour, {settle_minutes} min past it: each project's {frequency} window that "
                 "holds the hour that just settled, which sends what settled since the last run.")
    def _schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.astimezone(dt.UTC)
        settled = tick - settle  # everything before this has settled; the newest hour ends here
        start = window_floor(settled - dt.timedelta(microseconds=1), frequency)
        time_fmt = job.partitions_def.primary_dimension.partitions_def.fmt
        projects = context.instance.get_dynamic_partitions(project_partitions(sink, frequency).name)
        for project in sorted(projects):
            key = partition_key(time_fmt, start, project)
            yield dg.RunRequest(run_key=f"{key}@{settled:%Y-%m-%dT%H:%M}", partition_key=key,
                                tags={**sink_tags(sink), "exports/reason": "schedule", "exports/project": project})

    return _schedule
