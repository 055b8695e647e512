"""Late rows, for every windowed sink: re-deliver recent windows whose source changed after delivery.

Langfuse ingests asynchronously, so spans can reach ClickHouse after their window was delivered, and
rows are updated or deleted later (new ReplacingMergeTree versions). Each sink's late-rows sensor
(`blob_storage_late_rows_sensor` for object storage) finds those windows and re-materializes them; a
re-run delivers the window again with the same keys or event ids. What a window was delivered with comes
from the sink (`WindowedSink.recorded_states`): object storage reads its manifests (below), an API sink
its delivery records in the state DB (`sync_windows.row_count` / `max_event_ts`, summed over the pieces
an hourly schedule sent).

One tick, for each ENABLED integration of the sink, of every frequency:

1. The windows to look at: complete windows that ended within `EXPORTS_LATE_ROWS_LOOKBACK_HOURS`
   (`now - lookback < end <= now - settle`: windows still settling are the schedule's), that are
   partitions (start on or after `EXPORTS_PARTITIONS_START`), and that the integration exports at all
   (a FROM_TODAY / FROM_CUSTOM_DATE window ending before its start date is skipped by the run, too).
2. Each window's manifest, read through the integration's own object store. Only windows that HAVE a
   manifest are compared: the manifest is the commit point, and a window without one is the history
   sensor's and the schedule's job, not this sensor's.
3. One ClickHouse query per project (`window_states_sql`): FINAL, the export's half-open window filter,
   `count()` and `max(event_ts)` grouped by window start.
4. A window whose count or max(event_ts) differs from the manifest's `source.row_count` /
   `source.max_event_ts` is requested again. That covers late spans (count up), updates (newer event_ts)
   and deletions (count down), including a window whose rows were all deleted (count 0; the re-run
   writes a manifest with zero files and deletes the old ones).

5. A window of step 1 whose newest run (of its job or an asset-page selection) FAILED on a transient fault
   (`exports/fault=transient`: the step's retries, about 2 minutes, were spent during a longer outage) is
   requested again, once per failed run (run key `retry:<frequency>:<partition key>:<failed run id>`), with
   or without a manifest: the schedule has moved on, and nothing else would. Not a run that Dagster runs
   again itself (`dagster/will_retry`), that delivered nothing and said why (`exports/skipped`), or that
   failed on the customer's fault (the integration is disabled) or the deployment's (it fails until fixed).

Requests: oldest window first, at most `MAX_LATE_REQUESTS_PER_TICK` per tick, on the frequency's export
job, tagged like the other runs (`exports/sink`, `exports/project`, `exports/reason=late_rows`), with the
run key `late:<frequency>:<partition key>:<rows>:<max_event_ts>`. The run key names the observed source
state, so the same change is never requested twice (Dagster skips a run key its sensor already used); the
frequency is in it because Dagster deduplicates run keys per sensor, not per job, and a daily and a weekly
partition can share a key like `2026-11-02|proj-a`. The sensor also keeps the run keys it requested in its
cursor and does not hand them to Dagster again, so a request whose run failed (its RetryPolicy has already
retried it) does not take one of the tick's places forever and starve younger windows; a new change makes
a new key. Windows with a queued or running run of their job are left alone until it ends (it may already
include the change; the next tick compares its manifest).

Faults: a destination that fails (the customer's fault, a transient one, or the deployment's, such as an
ENCRYPTION_KEY that cannot decrypt its secret) skips that integration for this tick with a log line; the
partition runs are what disable integrations (never for the deployment's faults). A ClickHouse error skips
that project; only when every project's query failed does the tick fail, so an outage is visible.

Cost per tick: one FINAL query over at most the lookback per project that has manifests in it, and one
object GET per window in the lookback (72 per hourly integration at the default). Secrets are decrypted
only in memory to open the store and never logged.
"""


import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster import SensorEvaluationContext

from exports_pipeline.engine.assets import FAULT_TAG, SINK_TAG_KEY, SKIPPED_TAG
from exports_pipeline.engine.partitions import partition_key, project_of_key, project_partitions
from exports_pipeline.engine.sink import EMPTY, WindowedSink, WindowState
from exports_pipeline.errors import ExportsError
from exports_pipeline.events.queries import window_states_sql
from exports_pipeline.resources.clickhouse import ClickHouseError, ClickHouseResource, query_tags
from exports_pipeline.state.store import StateStore
from exports_pipeline.windows import FREQUENCIES, FREQUENCY_STEP, Window, iso, window_floor

MAX_LATE_REQUESTS_PER_TICK = 24
# Runs of a partition in these states may still write its manifest: the window is left alone meanwhile.
IN_FLIGHT_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                      dg.DagsterRunStatus.STARTED]
PARTITION_TAG = "dagster/partition"
WILL_RETRY_TAG = "dagster/will_retry"  # Dagster runs this failed run again itself (dagster.yaml run_retries)


@dataclass(frozen=True)
class ChangedWindow:
    """A window whose source no longer matches its manifest."""

    frequency: str
    project_id: str
    window: Window
    partition_key: str
    manifest: WindowState
    source: WindowState

    @property
    def run_key(self) -> str:
        return (f"late:{self.frequency}:{self.partition_key}:{self.source.rows}:"
                f"{self.source.max_event_ts or 'none'}")

    def tags(self) -> dict[str, str]:
        return {"exports/reason": "late_rows",
                "exports/late_rows": (f"source {self.source.rows} rows, max event_ts {self.source.max_event_ts}; "
                                      f"manifest {self.manifest.rows} rows, max event_ts {self.manifest.max_event_ts}")}


@dataclass(frozen=True)
class FailedWindow:
    """A window whose newest run failed on a transient fault after its step retries were spent (an outage
    longer than they span): requested again once per failed run, so an outage never leaves a window
    unexported for good."""

    frequency: str
    project_id: str
    window: Window
    partition_key: str
    failed_run_id: str

    @property
    def run_key(self) -> str:
        return f"retry:{self.frequency}:{self.partition_key}:{self.failed_run_id}"

    def tags(self) -> dict[str, str]:
        return {"exports/reason": "retry", "exports/retry_of": self.failed_run_id}


# ----------------------------------------------------------------------------------------- windows


def recent_windows(now: dt.datetime, frequency: str, *, lookback: dt.timedelta, settle: dt.timedelta,
                   partitions_start: dt.datetime, exports_from: dt.datetime | None = None) -> list[Window]:
    """Complete windows of `frequency` with `now - lookback < end <= now - settle`, oldest first, that are
    partitions (start >= `partitions_start`) and that the integration exports (end > `exports_from`)."""
    step = FREQUENCY_STEP[frequency]
    end = window_floor(now - settle, frequency)  # the end of the newest settled window
    out: list[Window] = []
    while end > now - lookback:
        start = end - step
        if start < partitions_start or (exports_from is not None and end <= exports_from):
            break
        out.append(Window(start, end))
        end = start
    return out[::-1]


def source_window_states(clickhouse: ClickHouseResource, project_id: str, frequency: str,
                         span: Window, sensor: str = "late_rows") -> dict[dt.datetime, WindowState]:
    """ClickHouse's count() and max(event_ts) (FINAL) per window start of `frequency` within `span`, in one
    query; windows without rows are absent."""
    rows = clickhouse.query(window_states_sql(clickhouse.events_table, frequency),
                            {"project_id": project_id, "start": span.start, "end": span.end},
                            tags=query_tags(sensor=sensor, project=project_id, frequency=frequency))
    return {dt.datetime.fromtimestamp(int(start), dt.UTC): WindowState(int(count), iso(latest))
            for start, count, latest in rows if int(count)}


# ------------------------------------------------------------------------------------------ planning


def plan_late_requests(changed: list[ChangedWindow | FailedWindow], *, requested: dict,
                       in_flight: set[tuple[str, str]], unchecked: set[tuple[str, str]], limit: int,
                       job_names: dict[str, str], run_tags: dict[str, str]) -> tuple[list[dg.RunRequest], dict]:
    """Run requests for changed (or failed) windows, oldest first, at most `limit`, one per window.

    `requested` (the cursor: frequency -> partition key -> run key) holds what earlier ticks requested;
    a window whose current run key is there is not requested again. The new cursor keeps the entries of
    windows still changed (requested now or before) and of (frequency, project) pairs that could not be
    checked this tick; windows that match their manifest again, or left the lookback, drop out.
    """
    new: dict[str, dict[str, str]] = {}
    for frequency, entries in requested.items():
        for key, run_key in entries.items():
            if (frequency, project_of_key(key)) in unchecked:
                new.setdefault(frequency, {})[key] = run_key
    requests: list[dg.RunRequest] = []
    order = {f: i for i, f in enumerate(FREQUENCIES)}
    planned: set[tuple[str, str]] = set()  # a window both changed and failed is one request
    for c in sorted(changed, key=lambda c: (c.window.start, order[c.frequency], c.project_id)):
        if (c.frequency, c.partition_key) in planned:
            continue
        planned.add((c.frequency, c.partition_key))
        if requested.get(c.frequency, {}).get(c.partition_key) == c.run_key:
            new.setdefault(c.frequency, {})[c.partition_key] = c.run_key
            continue
        if (c.frequency, c.partition_key) in in_flight or len(requests) >= limit:
            continue
        requests.append(dg.RunRequest(
            run_key=c.run_key, partition_key=c.partition_key, job_name=job_names[c.frequency],
            tags={**run_tags, "exports/project": c.project_id, **c.tags()},
        ))
        new.setdefault(c.frequency, {})[c.partition_key] = c.run_key
    return requests, new


def newest_runs(instance: dg.DagsterInstance, sink: WindowedSink, assets: dict, job_names: dict[str, str],
                since: dt.datetime) -> dict[tuple[str, str], dg.DagsterRun]:
    """The newest run created since `since` of each (frequency, partition key) of the sink, whoever
    launched it: runs of the frequency's job, and of an asset selection holding its asset (the asset page;
    `ExportsRunCoordinator` gives those the sink tag)."""
    newest: dict[tuple[str, str], dg.DagsterRun] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(tags={SINK_TAG_KEY: sink.name}, created_after=since)):
        key = run.tags.get(PARTITION_TAG)
        if not key:
            continue
        for frequency, job_name in job_names.items():
            if run.job_name == job_name or (run.asset_selection and assets[frequency].key in run.asset_selection):
                newest.setdefault((frequency, key), run)  # get_runs lists the newest first
                break
    return newest


def failed_windows(newest: dict[tuple[str, str], dg.DagsterRun],
                   eligible: dict[tuple[str, str], tuple[str, Window]]) -> list[FailedWindow]:
    """The `eligible` windows (recent, settled, of an enabled integration) whose newest run failed on a
    transient fault and that Dagster does not run again itself. A customer's fault disabled the integration,
    the deployment's fails again until it is fixed, and a run that delivered nothing said why: none of
    those is requested again here."""
    out = []
    for (frequency, key), run in newest.items():
        if ((frequency, key) in eligible and run.status == dg.DagsterRunStatus.FAILURE
                and run.tags.get(FAULT_TAG) == "transient" and SKIPPED_TAG not in run.tags
                and run.tags.get(WILL_RETRY_TAG) != "true"):
            project, window = eligible[(frequency, key)]
            out.append(FailedWindow(frequency, project, window, key, run.run_id))
    return out


# -------------------------------------------------------------------------------------------- sensor


@dataclass
class _Scan:
    """What one tick found: changed windows, (frequency, project) pairs it could not check, counters."""

    changed: list[ChangedWindow | FailedWindow] = field(default_factory=list)
    #: (frequency, partition key) -> (project, window) of every window this tick looked at
    eligible: dict[tuple[str, str], tuple[str, Window]] = field(default_factory=dict)
    unchecked: set[tuple[str, str]] = field(default_factory=set)
    windows_compared: int = 0
    queries: int = 0
    query_errors: list[ClickHouseError] = field(default_factory=list)


def scan_integration(*, sink: WindowedSink, integration, frequency: str, clickhouse: ClickHouseResource,
                     state, resources: dict, now: dt.datetime, lookback: dt.timedelta, settle: dt.timedelta,
                     partitions_start: dt.datetime, time_fmt: str, scan: _Scan,
                     log: Callable[[str], None]) -> None:
    """Compare what one integration delivered recently with ClickHouse; add changed windows to `scan`."""
    project = integration.project_id
    try:
        exports_from = sink.history_start(integration, clickhouse) if sink.starts_at(integration) else None
        windows = recent_windows(now, frequency, lookback=lookback, settle=settle,
                                 partitions_start=partitions_start, exports_from=exports_from)
        if not windows:
            return
        for w in windows:
            scan.eligible[(frequency, str(partition_key(time_fmt, w.start, project)))] = (project, w)
        recorded = sink.recorded_states(state=state, resources=resources, integration=integration,
                                        frequency=frequency, windows=windows, log=log)
    except ExportsError as exc:  # messages of these never carry secrets
        scan.unchecked.add((frequency, project))
        log(f"late rows: skipped {project} ({frequency}) this tick: {type(exc).__name__}: {exc}")
        return
    if not recorded:
        return
    starts = sorted(recorded)
    scan.queries += 1
    try:
        source = source_window_states(clickhouse, project, frequency,
                                      Window(starts[0], starts[-1] + FREQUENCY_STEP[frequency]),
                                      sensor=sink.late_rows_sensor_name)
    except ClickHouseError as exc:
        scan.unchecked.add((frequency, project))
        scan.query_errors.append(exc)
        log(f"late rows: skipped {project} ({frequency}) this tick, ClickHouse failed: {exc}")
        return
    for start in starts:
        scan.windows_compared += 1
        now_state, delivered = source.get(start, EMPTY), recorded[start]
        if now_state != delivered:
            key = partition_key(time_fmt, start, project)
            scan.changed.append(ChangedWindow(frequency, project, Window(start, start + FREQUENCY_STEP[frequency]),
                                              str(key), delivered, now_state))


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_late_rows_sensor(sink: WindowedSink, jobs: dict, assets: dict, *, partitions_start: str,
                           settle_minutes: int, lookback_hours: int, interval_seconds: int,
                           clock: Callable[[], dt.datetime] | None = None) -> dg.SensorDefinition:
    """The sink's late-rows sensor over its per-frequency `jobs` and `assets`; `clock` gives "now" (the
    wall clock by default; tests pin it)."""
    from exports_pipeline.engine.assets import sink_tags

    clock = clock or _utc_now
    lookback = dt.timedelta(hours=lookback_hours)
    settle = dt.timedelta(minutes=settle_minutes)
    first = dt.datetime.fromisoformat(partitions_start).replace(tzinfo=dt.UTC)
    job_names = {f: job.name for f, job in jobs.items()}

    def tick(context: SensorEvaluationContext, clickhouse: ClickHouseResource, state: StateStore,
             resources: dict) -> dg.SensorResult:
        now = clock().astimezone(dt.UTC)
        requested = json.loads(context.cursor) if context.cursor else {}
        scan = _Scan()
        in_flight: set[tuple[str, str]] = set()
        for frequency in sink.frequencies:
            enabled = sink.list_enabled(state, frequency)
            if not enabled:
                continue
            # A project not yet in the dimension (the integrations sensor adds it) has no partitions to run.
            known = set(context.instance.get_dynamic_partitions(project_partitions(sink, frequency).name))
            time_fmt = assets[frequency].partitions_def.primary_dimension.partitions_def.fmt
            for integration in enabled:
                if integration.project_id in known:
                    scan_integration(sink=sink, integration=integration, frequency=frequency,
                                     clickhouse=clickhouse, state=state, resources=resources, now=now,
                                     lookback=lookback, settle=settle, partitions_start=first, time_fmt=time_fmt,
                                     scan=scan, log=context.log.warning)
            runs = context.instance.get_runs(filters=dg.RunsFilter(job_name=job_names[frequency],
                                                                   statuses=IN_FLIGHT_STATUSES))
            in_flight |= {(frequency, r.tags[PARTITION_TAG]) for r in runs if PARTITION_TAG in r.tags}
        newest = newest_runs(context.instance, sink, assets, job_names, since=now - lookback)
        in_flight |= {k for k, r in newest.items() if r.status in IN_FLIGHT_STATUSES}  # asset-page runs too
        scan.changed.extend(failed_windows(newest, scan.eligible))
        if scan.query_errors and len(scan.query_errors) == scan.queries:
            raise scan.query_errors[0]  # ClickHouse answered no project: fail the tick, visibly
        requests, cursor = plan_late_requests(scan.changed, requested=requested, in_flight=in_flight,
                                              unchecked=scan.unchecked, limit=MAX_LATE_REQUESTS_PER_TICK,
                                              job_names=job_names, run_tags=sink_tags(sink))
        failed = sum(isinstance(c, FailedWindow) for c in scan.changed)
        context.log.info(f"late rows: compared {scan.windows_compared} window(s) with what was delivered, "
                         f"{len(scan.changed) - failed} changed, {failed} failed on a transient fault, "
                         f"{len(requests)} requested")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    decorate = dg.sensor(
        name=sink.late_rows_sensor_name,
        jobs=list(jobs.values()),
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Re-delivers {sink.label} windows that ended in the last {lookback_hours} h whose ClickHouse "
        "count() or max(event_ts) no longer matches what was delivered (late rows, updates, deletions), and "
        "those whose last run failed on a transient fault (an outage longer than the step's retries), oldest "
        "first.",
    )
    # Dagster reads a sensor's resources from its signature (and refuses them in two places at once), so
    # the signature names the sink's resources.
    if sink.recorded_resource_keys == ("object_store",):
        from exports_pipeline.resources.object_store.resource import ObjectStoreResource

        @decorate
        def _sensor(context: SensorEvaluationContext, clickhouse: ClickHouseResource, state: StateStore,
                    object_store: ObjectStoreResource):
            with clickhouse.session():
                return tick(context, clickhouse, state, {"object_store": object_store})
    elif not sink.recorded_resource_keys:
        @decorate
        def _sensor(context: SensorEvaluationContext, clickhouse: ClickHouseResource, state: StateStore):
            with clickhouse.session():
                return tick(context, clickhouse, state, {})
    else:
        raise ValueError(f"late-rows sensor: resources {sink.recorded_resource_keys} of {sink.name} are not wired")

    return _sensor
