"""The integrations sensor of a windowed sink: keeps each frequency's project dimension equal to the
enabled integrations and requests the history each integration needs, oldest window first.

Per project the sensor's cursor holds the plan id, the next window to request and the end of the history
(frozen when the plan starts: later windows are the schedule's). Every request's run key carries the plan
id and the partition key, so it is never made twice; a new plan (mode or start date changed) re-requests
its windows. Windows already materialized (by the schedule, a backfill or a hand launch) are passed over.
"""


import datetime as dt
import json

import dagster as dg
from dagster import SensorEvaluationContext

from exports_pipeline.engine.assets import sink_tags
from exports_pipeline.engine.partitions import partition_key, project_partitions
from exports_pipeline.engine.sink import WindowedSink
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.state.store import StateStore
from exports_pipeline.windows import FREQUENCY_STEP, window_floor, window_starts

MAX_HISTORY_REQUESTS_PER_TICK = 24


def plan_history_requests(*, frequency: str, integrations, first_window: dict, partitions_start: dt.datetime,
                          now: dt.datetime, settle: dt.timedelta, cursor: dict, limit: int, time_fmt: str,
                          job_name: str, plan_id, tags: dict[str, str],
                          materialized: frozenset[str] = frozenset()) -> tuple[list[dg.RunRequest], dict]:
    """Run requests for the history the integrations still need, oldest window first, at most `limit`."""
    new_cursor: dict = {}
    candidates: list[tuple[dt.datetime, str, str]] = []
    for integration in integrations:
        project = integration.project_id
        pid = plan_id(integration)
        entry = cursor.get(project)
        if entry is None or entry.get("plan") != pid:
            start = first_window.get(project)
            if start is None:  # no events yet (or no start): nothing, ask again later
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
        key = partition_key(time_fmt, start, project)
        if str(key) not in materialized:
            if len(requests) == limit:
                break
            requests.append(dg.RunRequest(run_key=f"history:{pid}:{key}", partition_key=key, job_name=job_name,
                                          tags={**tags, "exports/reason": "history", "exports/project": project}))
        new_cursor[project] = {**new_cursor[project], "next": (start + FREQUENCY_STEP[frequency]).isoformat()}
    return requests, new_cursor


def build_history_sensor(sink: WindowedSink, jobs: dict, assets: dict, partitions_start: str,
                         settle_minutes: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=sink.history_sensor_name,
        jobs=list(jobs.values()),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps each {sink.label} project dimension equal to its enabled integrations and requests "
        "the history each integration needs, oldest window first.",
    )
    def _sensor(context: SensorEvaluationContext, clickhouse: ClickHouseResource, state: StateStore):
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = dt.datetime.now(dt.UTC)
        all_requests, dynamic_requests, new_cursor = [], [], {}
        for frequency in sink.frequencies:
            enabled = sink.list_enabled(state, frequency)
            projects = project_partitions(sink, frequency)
            current = set(context.instance.get_dynamic_partitions(projects.name))
            wanted = {i.project_id for i in enabled}
            if wanted - current:
                dynamic_requests.append(projects.build_add_request(sorted(wanted - current)))
            if current - wanted:
                dynamic_requests.append(projects.build_delete_request(sorted(current - wanted)))
            freq_cursor = cursor.get(frequency, {})
            first_window = {}
            for integration in enabled:
                if freq_cursor.get(integration.project_id, {}).get("plan") != sink.plan_id(integration):
                    first_window[integration.project_id] = sink.history_start(integration, clickhouse)
            time_def = assets[frequency].partitions_def.primary_dimension.partitions_def
            requests, new_cursor[frequency] = plan_history_requests(
                frequency=frequency, integrations=enabled, first_window=first_window,
                partitions_start=dt.datetime.fromisoformat(partitions_start).replace(tzinfo=dt.UTC), now=now,
                settle=dt.timedelta(minutes=settle_minutes), cursor=freq_cursor,
                limit=MAX_HISTORY_REQUESTS_PER_TICK - len(all_requests), time_fmt=time_def.fmt,
                job_name=jobs[frequency].name, plan_id=sink.plan_id, tags=sink_tags(sink),
                materialized=frozenset(context.instance.get_materialized_partitions(assets[frequency].key)),
            )
            all_requests.extend(requests)
        return dg.SensorResult(run_requests=all_requests, dynamic_partitions_requests=dynamic_requests,
                               cursor=json.dumps(new_cursor, sort_keys=True))

    return _sensor
