"""The Dagster side of object-storage exports: partitions, runs, checks, faults, cursor, sensor, schedule."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from exports_pipeline.engine.history import plan_history_requests
from exports_pipeline.sinks.object_storage.plugin import OBJECT_STORAGE
from exports_pipeline.engine.partitions import check_project_id
from exports_pipeline.state.models import BlobIntegration, blob_cursor_sink
from exports_pipeline_tests.defs.harness import (
    add_local,
    export_asset,
    export_env,
    over_http,
    shorten_step_retries,
)

DAY1, DAY2, DAY3 = "2026-11-02", "2026-11-03", "2026-11-04"


@pytest.fixture
def env(seeded, tmp_path):
    with export_env(seeded, tmp_path) as env:
        yield env


def run(env, key, frequency="daily"):
    job = env["defs"].get_job_def(f"blob_storage_export_{frequency}_job")
    return job.execute_in_process(partition_key=key, instance=env["instance"], raise_on_error=False)


def test_partition_run_exports_and_reports(env):
    add_local(env)
    result = run(env, f"{DAY1}|proj-1")
    assert result.success
    (mat,) = result.asset_materializations_for_node("blob_storage_export_daily")
    meta = {k: v.value for k, v in mat.metadata.items()}
    manifest_path = env["out"] / "proj-1/events/daily/2026-11-02T00-00-00Z_2026-11-03T00-00-00Z/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert meta["dagster/uri"] == f"file://{manifest_path}"
    assert meta["dagster/partition_row_count"] == manifest["source"]["row_count"] > 1000
    assert meta["files"] == len(manifest["files"]) == 2
    assert meta["bytes"] == sum(f["bytes"] for f in manifest["files"])
    assert meta["seconds"] > 0 and meta["rows_per_second"] > 0
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["clickhouse_row_count"].value == manifest["source"]["row_count"]
    tags = env["instance"].get_run_by_id(result.run_id).tags
    assert tags["exports/sink"] == "object_storage" and tags["dagster/partition/project"] == "proj-1"
    cursor = env["state"].get_cursor(blob_cursor_sink("daily"), "proj-1")
    assert cursor.last_sync_at == dt.datetime(2026, 11, 3, tzinfo=dt.UTC)


def test_partition_without_enabled_integration_writes_nothing_and_says_why(env):
    add_local(env)
    env["state"].disable_blob_integration("proj-1")
    result = run(env, f"{DAY1}|proj-1")
    assert not result.success
    assert "disabled" in env["instance"].get_run_by_id(result.run_id).tags["exports/skipped"]
    assert list(env["out"].iterdir()) == []
    assert result.asset_materializations_for_node("blob_storage_export_daily") == []


def test_customer_fault_fails_without_retry_and_disables_the_integration(env, fault_proxy, moto_endpoint):
    fault_proxy.fail_all(status=403, code="AccessDenied")
    integ = BlobIntegration(project_id="proj-1", type="S3_COMPATIBLE", bucket_name="some-bucket",
                            endpoint=fault_proxy.url, force_path_style=True, export_frequency="daily",
                            file_types=("jsonl",))
    env["state"].upsert_blob_integration(integ)
    env["instance"].add_dynamic_partitions("blob_storage_projects_daily", ["proj-1"])
    result = run(env, f"{DAY1}|proj-1")
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == []
    stored = env["state"].get_blob_integration("proj-1")
    assert stored.enabled is False and "AccessDenied" in stored.last_error and stored.last_error_at is not None


def test_s3_5xx_on_a_part_is_retried_and_the_run_succeeds(env, fault_proxy, s3_bucket):
    fault_proxy.fail("PutObject", nth=1, times=1, status=500)
    integ = BlobIntegration(project_id="proj-1", type="S3_COMPATIBLE", bucket_name=s3_bucket,
                            endpoint=fault_proxy.url, force_path_style=True, export_frequency="daily",
                            file_types=("parquet",))
    env["state"].upsert_blob_integration(integ)
    env["instance"].add_dynamic_partitions("blob_storage_projects_daily", ["proj-1"])
    result = run(env, f"{DAY1}|proj-1")
    assert result.success
    assert fault_proxy.count("PutObject") >= 3  # the failed one, its retry, the manifest
    assert env["state"].get_blob_integration("proj-1").enabled


def test_cursor_advances_over_contiguous_windows_only(env):
    add_local(env, file_types=("jsonl",))
    sink = blob_cursor_sink("daily")
    assert run(env, f"{DAY1}|proj-1").success
    assert run(env, f"{DAY3}|proj-1").success
    assert env["state"].get_cursor(sink, "proj-1").last_sync_at == dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    assert run(env, f"{DAY2}|proj-1").success
    assert env["state"].get_cursor(sink, "proj-1").last_sync_at == dt.datetime(2026, 11, 5, tzinfo=dt.UTC)


def test_schedule_tick_gives_one_run_per_project(env):
    add_local(env, "proj-1")
    add_local(env, "proj-2")
    schedule = env["defs"].get_schedule_def("blob_storage_export_daily_schedule")
    assert schedule.cron_schedule == "15 0 * * *"
    ctx = dg.build_schedule_context(instance=env["instance"],
                                    scheduled_execution_time=dt.datetime(2026, 11, 5, 0, 15, tzinfo=dt.UTC))
    requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert sorted(r.partition_key for r in requests) == ["2026-11-04|proj-1", "2026-11-04|proj-2"]
    assert len({r.run_key for r in requests}) == 2


# ----------------------------------------------------------------------------------------------- sensor


def sensor_tick(env, cursor=None):
    sensor = env["defs"].get_sensor_def("blob_storage_integrations_sensor")
    ctx = dg.build_sensor_context(instance=env["instance"], cursor=cursor, resources=env["resources"],
                                  definitions=env["defs"])
    return sensor(ctx)


def test_sensor_keeps_project_dimension_equal_to_enabled_integrations(env):
    add_local(env, "proj-1", "daily")
    add_local(env, "proj-2", "hourly")
    env["state"].upsert_blob_integration(BlobIntegration(project_id="proj-9", type="LOCAL", bucket_name=str(env["out"]),
                                                         export_frequency="daily", enabled=False))
    env["instance"].add_dynamic_partitions("blob_storage_projects_daily", ["gone"])
    env["instance"].delete_dynamic_partition("blob_storage_projects_daily", "proj-1")
    result = sensor_tick(env)
    reqs = {(type(r).__name__, r.partitions_def_name, tuple(r.partition_keys)) for r in result.dynamic_partitions_requests}
    assert reqs == {("AddDynamicPartitionsRequest", "blob_storage_projects_daily", ("proj-1",)),
                    ("DeleteDynamicPartitionsRequest", "blob_storage_projects_daily", ("gone",))}


def test_sensor_requests_full_history_from_first_event_oldest_first_and_never_twice(env):
    add_local(env, "proj-1", "daily")
    first = sensor_tick(env)
    keys = [r.partition_key for r in first.run_requests]
    assert keys[0] == f"{DAY1}|proj-1"  # FULL_HISTORY starts at the project's first event, not the epoch
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    second = sensor_tick(env, first.cursor)
    assert {r.run_key for r in second.run_requests}.isdisjoint({r.run_key for r in first.run_requests})
    assert [r.partition_key for r in second.run_requests] == [] or \
        min(r.partition_key for r in second.run_requests) > max(keys)


def test_sensor_requests_nothing_for_a_project_without_events_until_it_has_some(env):
    add_local(env, "proj-empty", "daily")
    result = sensor_tick(env)
    assert result.run_requests == []
    assert json.loads(result.cursor)["daily"] == {}


def test_sensor_custom_date_and_mode_change_replans(env):
    start = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
    add_local(env, "proj-1", "daily", export_mode="FROM_CUSTOM_DATE", export_start_date=start)
    first = sensor_tick(env)
    assert first.run_requests[0].partition_key == "2026-11-10|proj-1"
    env["state"].upsert_blob_integration(BlobIntegration(project_id="proj-1", type="LOCAL",
                                                         bucket_name=str(env["out"]), export_frequency="daily",
                                                         file_types=("jsonl",)))
    second = sensor_tick(env, first.cursor)
    assert second.run_requests[0].partition_key == f"{DAY1}|proj-1"
    assert {r.run_key for r in second.run_requests}.isdisjoint({r.run_key for r in first.run_requests})


def _integration(project, mode="FULL_HISTORY", start=None):
    return BlobIntegration(project_id=project, type="LOCAL", bucket_name="/tmp", export_frequency="hourly",
                           export_mode=mode, export_start_date=start)


def test_history_planning_is_bounded_per_tick_and_resumes_oldest_first():
    now = dt.datetime(2026, 11, 3, 12, 30, tzinfo=dt.UTC)
    integs = [_integration("a"), _integration("b")]
    first_window = {"a": dt.datetime(2026, 11, 3, 0, tzinfo=dt.UTC), "b": dt.datetime(2026, 11, 3, 6, tzinfo=dt.UTC)}
    kwargs = dict(frequency="hourly", integrations=integs, first_window=first_window,
                  partitions_start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), now=now, settle=dt.timedelta(minutes=15),
                  limit=5, time_fmt="%Y-%m-%d-%H:%M", job_name="j", plan_id=OBJECT_STORAGE.plan_id,
                  tags={"exports/sink": OBJECT_STORAGE.name})
    reqs, cursor = plan_history_requests(cursor={}, **kwargs)
    assert [r.partition_key for r in reqs] == [f"2026-11-03-0{h}:00|a" for h in range(5)]
    seen = [r.partition_key for r in reqs]
    while reqs:
        reqs, cursor = plan_history_requests(cursor=cursor, **kwargs)
        seen += [r.partition_key for r in reqs]
    # a: 00..11 (12:00 is still settling at 12:30 -> schedule's), b: 06..11
    assert len(seen) == len(set(seen)) == 12 + 6
    assert max(seen) == "2026-11-03-11:00|b"
    assert OBJECT_STORAGE.plan_id(_integration("a")) != OBJECT_STORAGE.plan_id(_integration("a", "FROM_CUSTOM_DATE", now))


@pytest.mark.parametrize("bad", ["a|b", "has space", "x,y", "", "[x]", "a/b"])
def test_project_ids_dagster_cannot_use_are_refused(bad):
    with pytest.raises(ValueError, match="partition key"):
        check_project_id(bad)


def test_sensor_passes_over_windows_already_materialized(env):
    add_local(env, "proj-1", "daily", file_types=("jsonl",))
    assert run(env, f"{DAY1}|proj-1").success
    keys = [r.partition_key for r in sensor_tick(env).run_requests]
    assert f"{DAY1}|proj-1" not in keys and keys[0] == f"{DAY2}|proj-1"


def test_transient_clickhouse_failure_over_http_is_retried_and_the_run_succeeds(env, seeded, chdb_http,
                                                                               monkeypatch):
    """ClickHouse over its HTTP interface answers 503 once: the step is retried by its RetryPolicy."""
    shorten_step_retries(monkeypatch, 0.5)
    http, daily = over_http(seeded, chdb_http), export_asset("daily")
    add_local(env, file_types=("csv",))
    chdb_http.state.fail_next = 1
    result = dg.materialize([daily], partition_key=f"{DAY1}|proj-1", instance=env["instance"],
                            resources={**env["resources"], "clickhouse": http}, raise_on_error=False)
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    assert chdb_http.state.fail_next == 0
    assert env["state"].get_blob_integration("proj-1").enabled


def test_first_event_is_looked_up_only_until_the_cursor_has_a_position(env, seeded, chdb_http):
    """FULL_HISTORY's origin needs a FINAL scan of the whole project; it must not run on every window."""
    http, daily = over_http(seeded, chdb_http), export_asset("daily")
    add_local(env, file_types=("jsonl",))

    def run_and_count_first_event_queries(key):
        before = len(chdb_http.state.requests)
        result = dg.materialize([daily], partition_key=key, instance=env["instance"],
                                resources={**env["resources"], "clickhouse": http})
        assert result.success
        return sum("min(start_time)" in r.sql for r in chdb_http.state.requests[before:])

    assert run_and_count_first_event_queries(f"{DAY1}|proj-1") == 1
    assert run_and_count_first_event_queries(f"{DAY2}|proj-1") == 0
    assert env["state"].get_cursor(blob_cursor_sink("daily"), "proj-1").last_sync_at == dt.datetime(2026, 11, 4, tzinfo=dt.UTC)


def test_run_tagged_only_with_the_partition_key_exports_that_partition(env):
    """The asset page launches one partition as a run tagged `dagster/partition` only (no per-dimension
    tags): the asset must find its project and window from the key itself."""
    add_local(env, project="proj-2", file_types=("csv",))
    job = env["defs"].get_job_def("blob_storage_export_daily_job")
    result = job.execute_in_process(instance=env["instance"], raise_on_error=False,
                                    tags={"dagster/partition": f"{DAY2}|proj-2"})
    assert result.success
    (mat,) = result.asset_materializations_for_node("blob_storage_export_daily")
    assert mat.partition == f"{DAY2}|proj-2"
    manifest = json.loads((env["out"] / "proj-2/events/daily/2026-11-03T00-00-00Z_2026-11-04T00-00-00Z"
                           / "manifest.json").read_text())
    assert manifest["project_id"] == "proj-2" and manifest["source"]["row_count"] > 1000
