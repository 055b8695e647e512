"""The late-rows sensor: recent windows whose ClickHouse count()/max(event_ts) no longer match their
manifest are re-requested (late spans, updates, deletions), once per observed change, oldest first.

Every test gets its own copy of the module's seeded table (`events`), so rows a test adds or deletes
never reach another test. The sensor's "now" is pinned (`env["clock"]`); the seeded days are
2026-11-02 and 2026-11-03.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid

import dagster as dg
import pytest

from exports_pipeline.engine.assets import FAULT_TAG, SKIPPED_TAG
from exports_pipeline.engine.late_rows import (
    WILL_RETRY_TAG,
    ChangedWindow,
    plan_late_requests,
    recent_windows,
    source_window_states,
)
from exports_pipeline.engine.sink import WindowState
from exports_pipeline.events.ddl import create_events_table
from exports_pipeline.sinks.object_storage.plugin import OBJECT_STORAGE
from exports_pipeline.events.queries import WINDOW_FILTER, qualified_table
from exports_pipeline.windows import Window, iso
from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client
from exports_pipeline.state.models import BlobIntegration
from exports_pipeline_tests.defs import harness
from exports_pipeline_tests.defs.harness import export_env
from exports_pipeline_tests.seeded_events import MIGRATION_0042_COLUMNS, copy_events_table

UTC = dt.UTC
DAY1, DAY2 = "2026-11-02", "2026-11-03"
D1 = Window(dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 3, tzinfo=UTC))
D2 = Window(dt.datetime(2026, 11, 3, tzinfo=UTC), dt.datetime(2026, 11, 4, tzinfo=UTC))
NOW = dt.datetime(2026, 11, 4, 12, 0, tzinfo=UTC)  # both seeded days settled and within 72 h


# ----------------------------------------------------------------------------------------------- harness


@pytest.fixture
def events(seeded, chdb_path):
    """This test's own copy of the seeded table, every stored version included (unmerged)."""
    database = seeded.events_table.split(".")[0]
    table = f"{database}.late_{uuid.uuid4().hex[:10]}"
    with chdb_client(chdb_path) as client:
        create_events_table(client, table)
        client.command(f"INSERT INTO {qualified_table(table)} SELECT * FROM {qualified_table(seeded.events_table)} "
                       "SETTINGS optimize_on_insert = 0")
    yield ClickHouseResource(url=seeded.url, events_table=table)
    with chdb_client(chdb_path) as client:
        client.command(f"DROP TABLE IF EXISTS {qualified_table(table)} SYNC")


@pytest.fixture
def env(events, tmp_path, monkeypatch):
    harness.shorten_step_retries(monkeypatch, 0.05)  # before the defs are built: failing runs end quickly
    clock = {"now": NOW}
    with export_env(events, tmp_path, late_rows_lookback_hours=72, clock=lambda: clock["now"]) as env:
        env.update(clock=clock, events=events)
        yield env


def add_local(env, project="proj-1", frequency="daily", **kw):
    return harness.add_local(env, project, frequency, **{"file_types": ("jsonl",), **kw})


def run(env, key, frequency="daily"):
    job = env["defs"].get_job_def(f"blob_storage_export_{frequency}_job")
    result = job.execute_in_process(partition_key=key, instance=env["instance"], raise_on_error=False)
    assert result.success
    return result


def tick(env, cursor=None):
    sensor = env["defs"].get_sensor_def(OBJECT_STORAGE.late_rows_sensor_name)
    ctx = dg.build_sensor_context(instance=env["instance"], cursor=cursor, resources=env["resources"],
                                  definitions=env["defs"])
    return sensor(ctx)


def keys(result):
    return [r.partition_key for r in result.run_requests]


def manifest(env, project, frequency, window):
    folder = f"{project}/events/{frequency}/{window.start:%Y-%m-%dT%H-%M-%SZ}_{window.end:%Y-%m-%dT%H-%M-%SZ}"
    return json.loads((env["out"] / folder / "manifest.json").read_text())


def rewrite_rows(events, project, window, replace: str, limit: int | None = 1) -> None:
    """Insert new rows made from the window's current rows (latest versions, first by span_id), with
    `replace` (a `* REPLACE (...)` list) applied: a late span, an update or a tombstone."""
    table = qualified_table(events.events_table)
    events.command(
        f"INSERT INTO {table} SELECT * REPLACE ({replace}) FROM (SELECT * FROM {table} FINAL WHERE {WINDOW_FILTER} "
        f"ORDER BY span_id{f' LIMIT {limit}' if limit else ''})",
        {"project_id": project, "start": window.start, "end": window.end},
    )


def add_late_span(events, project, window):
    """A new span of the window, ingested (event_ts) well after the window was exported."""
    rewrite_rows(events, project, window, "concat('late-', span_id) AS span_id, "
                 "event_ts + INTERVAL 40 HOUR AS event_ts")


def delete_rows(events, project, window, limit: int | None = 1):
    """Tombstones: newer versions (larger event_ts) with is_deleted = 1."""
    rewrite_rows(events, project, window, "1 AS is_deleted, event_ts + INTERVAL 40 HOUR AS event_ts", limit)


# ------------------------------------------------------------------------------------ through Dagster


def test_exported_windows_need_nothing(env):
    add_local(env)
    run(env, f"{DAY1}|proj-1")
    run(env, f"{DAY2}|proj-1")
    result = tick(env)
    assert result.run_requests == []
    assert json.loads(result.cursor) == {}


def test_late_span_requests_its_partition_once_and_settles_after_the_rerun(env):
    add_local(env)
    run(env, f"{DAY1}|proj-1")
    run(env, f"{DAY2}|proj-1")
    before = manifest(env, "proj-1", "daily", D1)["source"]
    add_late_span(env["events"], "proj-1", D1)

    first = tick(env)
    (request,) = first.run_requests
    assert request.partition_key == f"{DAY1}|proj-1"
    assert request.job_name == "blob_storage_export_daily_job"
    assert request.tags["exports/sink"] == "object_storage"
    assert request.tags["exports/reason"] == "late_rows" and request.tags["exports/project"] == "proj-1"
    rows = before["row_count"] + 1
    assert request.run_key.startswith(f"late:daily:{DAY1}|proj-1:{rows}:")
    assert request.run_key.split(":", 4)[4] > before["max_event_ts"]  # the late span's event_ts

    # Same state, no cursor (a reset sensor): the same run key, which Dagster never launches twice.
    again = tick(env)
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    # With the cursor the sensor does not even hand it to Dagster again.
    with_cursor = tick(env, first.cursor)
    assert with_cursor.run_requests == []
    assert json.loads(with_cursor.cursor) == {"daily": {f"{DAY1}|proj-1": request.run_key}}

    job = env["defs"].get_job_def("blob_storage_export_daily_job")
    rerun = job.execute_in_process(partition_key=request.partition_key, tags=request.tags, instance=env["instance"])
    assert rerun.success
    # the tag the sensor reads to leave a partition with a run in flight alone
    assert env["instance"].get_run_by_id(rerun.run_id).tags["dagster/partition"] == f"{DAY1}|proj-1"
    assert manifest(env, "proj-1", "daily", D1)["source"]["row_count"] == rows
    settled = tick(env, with_cursor.cursor)
    assert settled.run_requests == []
    assert json.loads(settled.cursor) == {}


def test_an_update_that_only_moves_max_event_ts_is_requested(env):
    add_local(env)
    run(env, f"{DAY1}|proj-1")
    before = manifest(env, "proj-1", "daily", D1)["source"]
    rewrite_rows(env["events"], "proj-1", D1, "concat('[v3] ', output) AS output, event_ts + INTERVAL 40 HOUR AS event_ts")
    (request,) = tick(env).run_requests
    assert request.partition_key == f"{DAY1}|proj-1"
    assert request.run_key.startswith(f"late:daily:{DAY1}|proj-1:{before['row_count']}:")  # same count
    assert not request.run_key.endswith(before["max_event_ts"])


def test_deletions_propagate_even_when_every_row_of_a_window_is_gone(env):
    add_local(env)
    run(env, f"{DAY1}|proj-1")
    run(env, f"{DAY2}|proj-1")
    d1_rows = manifest(env, "proj-1", "daily", D1)["source"]["row_count"]
    delete_rows(env["events"], "proj-1", D1, limit=1)
    delete_rows(env["events"], "proj-1", D2, limit=None)  # all of DAY2

    result = tick(env)
    assert keys(result) == [f"{DAY1}|proj-1", f"{DAY2}|proj-1"]  # oldest first
    assert result.run_requests[0].run_key.startswith(f"late:daily:{DAY1}|proj-1:{d1_rows - 1}:")
    assert result.run_requests[1].run_key == f"late:daily:{DAY2}|proj-1:0:none"

    for request in result.run_requests:
        run(env, request.partition_key)
    emptied = manifest(env, "proj-1", "daily", D2)
    assert emptied["source"] == {**emptied["source"], "row_count": 0, "max_event_ts": None}
    assert emptied["files"] == []
    assert tick(env, result.cursor).run_requests == []


def test_windows_outside_the_lookback_or_without_a_manifest_are_not_requested(env):
    add_local(env)
    run(env, f"{DAY1}|proj-1")  # DAY2 never exported: no manifest
    add_late_span(env["events"], "proj-1", D1)
    add_late_span(env["events"], "proj-1", D2)
    assert keys(tick(env)) == [f"{DAY1}|proj-1"]
    env["clock"]["now"] = D1.end + dt.timedelta(hours=72) - dt.timedelta(minutes=1)  # DAY1 ended 71:59 ago
    assert keys(tick(env)) == [f"{DAY1}|proj-1"]
    env["clock"]["now"] = D1.end + dt.timedelta(hours=72)  # ended 72 h ago: out
    assert tick(env).run_requests == []


def test_a_window_still_settling_is_left_to_the_schedule(env):
    add_local(env)
    run(env, f"{DAY2}|proj-1")  # e.g. launched by hand right after the day ended
    add_late_span(env["events"], "proj-1", D2)
    env["clock"]["now"] = D2.end + dt.timedelta(minutes=10)  # settle is 15 min
    assert tick(env).run_requests == []
    env["clock"]["now"] = D2.end + dt.timedelta(minutes=15)
    assert keys(tick(env)) == [f"{DAY2}|proj-1"]


def test_another_projects_late_rows_never_trigger_this_projects_windows(env):
    add_local(env, "proj-1")
    add_local(env, "proj-2")
    for project in ("proj-1", "proj-2"):
        run(env, f"{DAY1}|{project}")
    add_late_span(env["events"], "proj-2", D1)
    assert keys(tick(env)) == [f"{DAY1}|proj-2"]


@pytest.mark.parametrize(("frequency", "key", "window", "now"), [
    ("hourly", "2026-11-02-10:00|proj-1",
     Window(dt.datetime(2026, 11, 2, 10, tzinfo=UTC), dt.datetime(2026, 11, 2, 11, tzinfo=UTC)), NOW),
    ("weekly", "2026-11-02|proj-1",
     Window(dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 9, tzinfo=UTC)),
     dt.datetime(2026, 11, 9, 12, tzinfo=UTC)),
])
def test_hourly_and_weekly_windows_use_their_partition_keys_and_jobs(env, frequency, key, window, now):
    add_local(env, "proj-1", frequency)
    env["clock"]["now"] = now
    run(env, key, frequency)
    assert manifest(env, "proj-1", frequency, window)["source"]["row_count"] > 0
    assert tick(env).run_requests == []
    add_late_span(env["events"], "proj-1", window)
    (request,) = tick(env).run_requests
    assert request.partition_key == key
    assert request.job_name == f"blob_storage_export_{frequency}_job"
    assert request.run_key.startswith(f"late:{frequency}:{key}:")


def test_manifests_are_read_from_s3_under_the_integrations_prefix(env, moto_endpoint, s3_bucket):
    env["state"].upsert_blob_integration(BlobIntegration(
        project_id="proj-1", type="S3_COMPATIBLE", bucket_name=s3_bucket, prefix="langfuse/exports/",
        endpoint=moto_endpoint, force_path_style=True, export_frequency="daily", file_types=("jsonl",)))
    env["instance"].add_dynamic_partitions("blob_storage_projects_daily", ["proj-1"])
    run(env, f"{DAY1}|proj-1")
    assert tick(env).run_requests == []
    delete_rows(env["events"], "proj-1", D1)
    assert keys(tick(env)) == [f"{DAY1}|proj-1"]


def test_a_failing_destination_skips_that_integration_only(env, fault_proxy, capsys):
    add_local(env, "proj-1")
    run(env, f"{DAY1}|proj-1")
    add_late_span(env["events"], "proj-1", D1)
    fault_proxy.fail_all(status=403, code="AccessDenied")
    env["state"].upsert_blob_integration(BlobIntegration(
        project_id="proj-2", type="S3_COMPATIBLE", bucket_name="some-bucket", endpoint=fault_proxy.url,
        force_path_style=True, export_frequency="daily", file_types=("jsonl",)))
    env["instance"].add_dynamic_partitions("blob_storage_projects_daily", ["proj-2"])
    add_local(env, "proj-3", bucket_name=str(env["out"] / "missing"))  # a directory that does not exist
    capsys.readouterr()
    result = tick(env)
    assert keys(result) == [f"{DAY1}|proj-1"]
    assert fault_proxy.count("GetObject") >= 1
    text = capsys.readouterr().err  # the sensor's log (Dagster's handler writes to stderr)
    assert "skipped proj-2 (daily)" in text and "AccessDenied" in text
    assert "skipped proj-3 (daily)" in text
    # the sensor disables nothing: that is the partition runs' job
    assert env["state"].get_blob_integration("proj-2").enabled
    assert env["state"].get_blob_integration("proj-3").enabled


def test_a_partition_with_a_run_in_flight_is_left_alone_until_it_ends(env):
    add_local(env)
    run(env, f"{DAY1}|proj-1")
    add_late_span(env["events"], "proj-1", D1)
    job = env["defs"].get_job_def("blob_storage_export_daily_job")
    in_flight = env["instance"].create_run_for_job(job_def=job, tags={"dagster/partition": f"{DAY1}|proj-1"},
                                               status=dg.DagsterRunStatus.NOT_STARTED)
    assert tick(env).run_requests == []
    env["instance"].report_run_canceled(in_flight)
    assert keys(tick(env)) == [f"{DAY1}|proj-1"]


def run_failing(env, key, frequency="daily"):
    job = env["defs"].get_job_def(f"blob_storage_export_{frequency}_job")
    result = job.execute_in_process(partition_key=key, instance=env["instance"], raise_on_error=False)
    assert not result.success
    return env["instance"].get_run_by_id(result.run_id)


def add_refusing_s3(env, monkeypatch, project="proj-1", frequency="daily", port=1):
    """An S3 integration whose endpoint refuses connections (credentials from the default chain)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env["state"].upsert_blob_integration(BlobIntegration(
        project_id=project, type="S3_COMPATIBLE", bucket_name="some-bucket", endpoint=f"http://127.0.0.1:{port}",
        force_path_style=True, export_frequency=frequency, file_types=("jsonl",)))
    env["instance"].add_dynamic_partitions(f"blob_storage_projects_{frequency}", [project])


def test_a_window_whose_run_failed_on_a_transient_fault_is_requested_again_once_per_failed_run(env, monkeypatch):
    """An outage longer than the step's retries fails the window's run; the schedule has moved on. The
    sensor requests the window again (it has no manifest), once per failed run, until a run delivers it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: every connection refused
        add_refusing_s3(env, monkeypatch, port=sock.getsockname()[1])
        failed = run_failing(env, f"{DAY1}|proj-1")
        assert failed.tags[FAULT_TAG] == "transient"
        assert env["state"].get_blob_integration("proj-1").enabled

        result = tick(env)
        (request,) = result.run_requests
        assert request.partition_key == f"{DAY1}|proj-1"
        assert request.job_name == "blob_storage_export_daily_job"
        assert request.run_key == f"retry:daily:{DAY1}|proj-1:{failed.run_id}"
        assert request.tags["exports/reason"] == "retry" and request.tags["exports/retry_of"] == failed.run_id
        assert request.tags["exports/sink"] == "object_storage" and request.tags["exports/project"] == "proj-1"
        assert tick(env, result.cursor).run_requests == []  # that failure was requested already

        again = run_failing(env, f"{DAY1}|proj-1")  # the requested run failed too: a new request
        result = tick(env, result.cursor)
        assert [r.run_key for r in result.run_requests] == [f"retry:daily:{DAY1}|proj-1:{again.run_id}"]

    add_local(env)  # the outage is over (here: a destination that works)
    run(env, f"{DAY1}|proj-1")
    assert tick(env, result.cursor).run_requests == []  # its newest run delivered it


def test_a_failed_asset_page_run_is_requested_again_too(env):
    """The asset page runs the asset selection on `__ASSET_JOB`, not the frequency's job;
    ExportsRunCoordinator gives it the sink tag."""
    add_local(env)
    asset_job = env["defs"].resolve_implicit_global_asset_job_def()
    failed = env["instance"].create_run_for_job(
        job_def=asset_job, asset_selection=frozenset({dg.AssetKey("blob_storage_export_daily")}),
        status=dg.DagsterRunStatus.FAILURE,
        tags={"dagster/partition": f"{DAY1}|proj-1", "exports/sink": "object_storage", FAULT_TAG: "transient"})
    assert failed.job_name == "__ASSET_JOB"
    (request,) = tick(env).run_requests
    assert request.run_key == f"retry:daily:{DAY1}|proj-1:{failed.run_id}"


@pytest.mark.parametrize("tags", [
    {FAULT_TAG: "deployment"},  # fails again until the deployment is fixed
    {FAULT_TAG: "customer"},  # (the run disabled the integration; here it stays enabled, to isolate the tag)
    {FAULT_TAG: "transient", WILL_RETRY_TAG: "true"},  # Dagster runs it again itself
    {FAULT_TAG: "transient", SKIPPED_TAG: "the integration of proj-1 is disabled"},
    {},  # no fault recorded: the run never reached the export (or its process died: run retries' job)
])
def test_failed_runs_that_another_fault_or_dagster_answers_are_not_requested(env, tags):
    add_local(env)
    job = env["defs"].get_job_def("blob_storage_export_daily_job")
    env["instance"].create_run_for_job(job_def=job, status=dg.DagsterRunStatus.FAILURE,
                                       tags={**job.tags, "dagster/partition": f"{DAY1}|proj-1", **tags})
    assert tick(env).run_requests == []


def test_a_transient_failure_outside_the_lookback_or_of_a_disabled_integration_is_not_requested(env):
    add_local(env)
    job = env["defs"].get_job_def("blob_storage_export_daily_job")
    env["instance"].create_run_for_job(job_def=job, status=dg.DagsterRunStatus.FAILURE,
                                       tags={**job.tags, "dagster/partition": f"{DAY1}|proj-1", FAULT_TAG: "transient"})
    assert keys(tick(env)) == [f"{DAY1}|proj-1"]
    env["clock"]["now"] = D1.end + dt.timedelta(hours=72)  # DAY1 left the lookback
    assert tick(env).run_requests == []
    env["clock"]["now"] = NOW
    env["state"].disable_blob_integration("proj-1", "AccessDenied")
    assert tick(env).run_requests == []


def test_a_table_without_migration_0042_exports_checks_and_is_watched_for_late_rows(seeded, tmp_path):
    """A deployment that has not run Langfuse migration 0042: the run succeeds and reports what it wrote
    and what the table lacks, the asset check passes, and the sensor compares its windows as usual."""
    table = f"{seeded.events_table.split('.')[0]}.pre_0042_{uuid.uuid4().hex[:8]}"
    events = copy_events_table(seeded, table, drop=MIGRATION_0042_COLUMNS)
    with export_env(events, tmp_path, late_rows_lookback_hours=72, clock=lambda: NOW) as env:
        add_local(env)
        result = run(env, f"{DAY1}|proj-1")
        (mat,) = result.asset_materializations_for_node("blob_storage_export_daily")
        written = manifest(env, "proj-1", "daily", D1)
        assert mat.metadata["missing_columns"].value == list(MIGRATION_0042_COLUMNS) == written["missing_columns"]
        assert [{"name": c.name, "type": c.type} for c in mat.metadata["dagster/column_schema"].value.columns] \
            == written["columns"]
        assert not {c["name"] for c in written["columns"]} & set(MIGRATION_0042_COLUMNS)
        (check,) = result.get_asset_check_evaluations()
        assert check.passed
        assert tick(env).run_requests == []
        add_late_span(events, "proj-1", D1)
        assert keys(tick(env)) == [f"{DAY1}|proj-1"]


def test_window_states_are_the_exports_counts_per_window(env):
    """One grouped FINAL query gives what the export counts window by window, boundary rows included."""
    events = env["events"]
    # a span starting exactly at DAY2's first instant belongs to DAY2 (and to its 00:00 hour) only
    rewrite_rows(events, "proj-1", D1, "concat('edge-', span_id) AS span_id, "
                 "toDateTime64('2026-11-03 00:00:00', 6, 'UTC') AS start_time")
    table = qualified_table(events.events_table)

    def one_window(window):
        sql = f"SELECT count(), max(event_ts) FROM {table} FINAL WHERE {WINDOW_FILTER}"
        count, latest = events.query(sql, {"project_id": "proj-1", "start": window.start, "end": window.end})[0]
        return WindowState(int(count), iso(latest.replace(tzinfo=UTC)) if count else None)

    hour = dt.timedelta(hours=1)
    for frequency, span, step in [("daily", Window(D1.start, D2.end), dt.timedelta(days=1)),
                                  ("hourly", Window(D2.start - 2 * hour, D2.start + 2 * hour), hour),
                                  ("weekly", Window(D1.start, D1.start + dt.timedelta(weeks=1)),
                                   dt.timedelta(weeks=1))]:
        got = source_window_states(events, "proj-1", frequency, span)
        starts = [span.start + i * step for i in range((span.end - span.start) // step)]
        assert {s: one_window(Window(s, s + step)) for s in starts} == {s: got.get(s, WindowState(0, None))
                                                                         for s in starts}, frequency
        assert all(s.tzinfo is not None for s in got)
    # the seeded rows all lie in the week of 2026-11-02 (a Monday): its count is the two days' counts
    daily = source_window_states(events, "proj-1", "daily", Window(D1.start, D2.end))
    week = source_window_states(events, "proj-1", "weekly", Window(D1.start, D1.start + dt.timedelta(weeks=1)))
    assert list(week) == [D1.start] and week[D1.start].rows == daily[D1.start].rows + daily[D2.start].rows


# ---------------------------------------------------------------------------------------- pure planning


def _changed(frequency, start, project="a", rows=5):
    step = {"hourly": dt.timedelta(hours=1), "daily": dt.timedelta(days=1)}[frequency]
    fmt = "%Y-%m-%d-%H:%M" if frequency == "hourly" else "%Y-%m-%d"
    return ChangedWindow(frequency, project, Window(start, start + step), f"{start.strftime(fmt)}|{project}",
                         manifest=WindowState(4, "2026-11-02T10:00:00.000000Z"),
                         source=WindowState(rows, "2026-11-03T10:00:00.000000Z"))


def test_planning_is_bounded_oldest_first_and_skips_what_was_requested_or_is_running():
    base = dt.datetime(2026, 11, 2, tzinfo=UTC)
    changed = [_changed("hourly", base + dt.timedelta(hours=h)) for h in reversed(range(30))]
    changed.append(_changed("daily", base - dt.timedelta(days=1), "b"))
    jobs = {"hourly": "h_job", "daily": "d_job"}
    kwargs = dict(unchecked=set(), limit=24, job_names=jobs, run_tags={"exports/sink": "object_storage"})

    hours = [f"2026-11-02-{h:02d}:00|a" for h in range(24)] + [f"2026-11-03-{h:02d}:00|a" for h in range(6)]
    reqs, cursor = plan_late_requests(changed, requested={}, in_flight=set(), **kwargs)
    assert [r.partition_key for r in reqs] == ["2026-11-01|b", *hours[:23]]
    assert reqs[0].job_name == "d_job" and reqs[1].job_name == "h_job"

    # Next tick, nothing changed: only the windows not yet requested; one is running, so it waits.
    reqs2, cursor2 = plan_late_requests(changed, requested=cursor, in_flight={("hourly", hours[23])}, **kwargs)
    assert [r.partition_key for r in reqs2] == hours[24:]
    assert len(cursor2["hourly"]) == 29 and cursor2["daily"] == cursor["daily"]

    # A requested window changes again: a new run key, requested again.
    moved = [*changed[:-1], _changed("daily", base - dt.timedelta(days=1), "b", rows=6)]
    reqs3, _ = plan_late_requests(moved, requested=cursor2, in_flight=set(), **kwargs)
    assert [r.run_key for r in reqs3] == ["late:daily:2026-11-01|b:6:2026-11-03T10:00:00.000000Z",
                                          "late:hourly:2026-11-02-23:00|a:5:2026-11-03T10:00:00.000000Z"]

    # Windows that match again drop out of the cursor, unless their project could not be checked.
    _, cursor4 = plan_late_requests([], requested=cursor2, in_flight=set(),
                                    **{**kwargs, "unchecked": {("daily", "b")}})
    assert cursor4 == {"daily": cursor2["daily"]}


def test_recent_windows_are_complete_settled_within_the_lookback_and_exported():
    now = dt.datetime(2026, 11, 4, 0, 10, tzinfo=UTC)
    kw = dict(lookback=dt.timedelta(hours=72), settle=dt.timedelta(minutes=15),
              partitions_start=dt.datetime(2026, 10, 1, tzinfo=UTC))
    daily = recent_windows(now, "daily", **kw)
    # 11-03 ends at 00:00, 10 min ago: still settling. 10-31 ended 72h10m ago: out.
    assert [w.start.day for w in daily] == [1, 2]
    assert [w.start.day for w in recent_windows(now + dt.timedelta(minutes=5), "daily", **kw)] == [1, 2, 3]
    hourly = recent_windows(now, "hourly", **kw)
    assert len(hourly) == 71 and hourly[-1].end == dt.datetime(2026, 11, 3, 23, tzinfo=UTC)  # 23:00-24:00 settles
    assert hourly[0].end == now - dt.timedelta(hours=72) + dt.timedelta(minutes=50)
    weekly = recent_windows(dt.datetime(2026, 11, 9, 12, tzinfo=UTC), "weekly", **kw)
    assert weekly == [Window(dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 9, tzinfo=UTC))]
    assert recent_windows(dt.datetime(2026, 11, 12, 12, tzinfo=UTC), "weekly", **kw) == []
    # not partitions yet / before the integration's start date
    assert recent_windows(now, "daily", **{**kw, "partitions_start": dt.datetime(2026, 11, 2, tzinfo=UTC)}) == \
        [Window(dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 3, tzinfo=UTC))]
    assert [w.start.day for w in recent_windows(now, "daily", exports_from=dt.datetime(2026, 11, 1, 12, tzinfo=UTC),
                                                **kw)] == [1, 2]
    assert [w.start.day for w in recent_windows(now, "daily", exports_from=dt.datetime(2026, 11, 2, tzinfo=UTC),
                                                **kw)] == [2]
