"""The batch export job, sensor and retention schedule through Dagster: the launchpad config path, the
sensor launching each queued request once (with the tags the concurrency limits count), a step retry of
the same run carrying on with the same row, cancel of a queued request, and the retention cleanup."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from exports_pipeline.batch_export.defs import EXPORT_ID_TAG, build_batch_export_defs
from exports_pipeline.batch_export.retention import purge_expired_files
from exports_pipeline.resources.mailer import MailerResource
from exports_pipeline.state.models import BATCH_EXPORT_ENTITY
from exports_pipeline_tests.batch_export.bx import local_env, s3_settings

FILTER = '[{"column":"type","type":"stringOptions","operator":"any of","value":["GENERATION"]}]'


@pytest.fixture
def env(seeded, tmp_path):
    with local_env(seeded, tmp_path) as env:
        yield env


def resources(env) -> dict:
    return {"clickhouse": env.clickhouse, "state": env.state, "object_store": env.object_store,
            "mailer": MailerResource()}


def job_of(env, **kw) -> dg.JobDefinition:
    defs = dg.Definitions.merge(build_batch_export_defs(env.settings, retry_seconds=0, **kw),
                                dg.Definitions(resources=resources(env)))
    return defs.resolve_job_def("batch_export")


def test_launchpad_fields_store_and_run_one_request(env):
    with dg.instance_for_test() as instance:
        config = {"project_id": "proj-2", "format": "jsonl", "compression": "gzip", "filter": FILTER, "limit": 50}
        result = job_of(env).execute_in_process(run_config={"ops": {"export_request": {"config": config}}},
                                                instance=instance)
        assert result.success
        (export,) = env.state.list_batch_exports()
        assert export.status == "COMPLETED" and export.run_id == result.run_id and export.project_id == "proj-2"
        assert export.rows_written == 50 and export.truncated and export.compression == "gzip"
        assert instance.get_run_by_id(result.run_id).tags[EXPORT_ID_TAG] == export.id
        meta = _output_metadata(result)
        assert meta["uri"] == export.object_uri and meta["rows"] == 50 and meta["bytes"] == export.bytes
        assert meta["link"] == export.url and "limited to 50 of" in meta["truncated"]


def _output_metadata(result) -> dict:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def test_a_bad_launchpad_request_stores_nothing(env):
    with dg.instance_for_test() as instance:
        config = {"project_id": "proj-2", "filter": '[{"column":"scores","type":"number","operator":">","value":1}]'}
        result = job_of(env).execute_in_process(run_config={"ops": {"export_request": {"config": config}}},
                                                instance=instance, raise_on_error=False)
        assert not result.success
        failure = result.failure_data_for_node("export_request").error.message
        assert "filter condition #1" in failure and "nothing was stored" in failure
        assert env.state.list_batch_exports() == []


def test_sensor_launches_each_queued_request_once_with_the_limit_tags(env):
    first, second = env.submit(project_id="proj-1"), env.submit(project_id="proj-2", format="parquet")
    cancelled = env.submit()
    env.state.cancel_batch_export(cancelled)
    defs = dg.Definitions.merge(build_batch_export_defs(env.settings, retry_seconds=0), dg.Definitions(resources=resources(env)))
    sensor = defs.resolve_sensor_def("batch_export_requests_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, resources=resources(env)))
        requests = result.run_requests
        assert [r.run_key for r in requests] == [first, second], "oldest first, cancelled never"
        assert requests[1].tags == {"exports/sink": "batch_export", "dagster/partition/project": "proj-2",
                                    EXPORT_ID_TAG: second}
        # The run the daemon would start from the request: same config, same tags (the project tag on an
        # unpartitioned job is harmless), and the row is done; the next tick no longer asks for it.
        job = defs.resolve_job_def("batch_export")
        run = job.execute_in_process(run_config=requests[1].run_config, tags=requests[1].tags, instance=instance)
        assert run.success and env.state.get_batch_export(second).status == "COMPLETED"
        again = sensor(dg.build_sensor_context(instance=instance, resources=resources(env))).run_requests
        assert [r.run_key for r in again] == [first]


def test_sensor_fails_a_queued_row_whose_run_ended_before_claiming_it(env):
    export_id = env.submit()
    other = env.submit(project_id="proj-2")
    with dg.instance_for_test() as instance:
        instance.create_run_for_job(dg.GraphDefinition(name="g", node_defs=[]).to_job(name="dead"),
                                    status=dg.DagsterRunStatus.FAILURE, tags={EXPORT_ID_TAG: export_id})
        defs = dg.Definitions.merge(build_batch_export_defs(env.settings), dg.Definitions(resources=resources(env)))
        result = defs.resolve_sensor_def("batch_export_requests_sensor")(
            dg.build_sensor_context(instance=instance, resources=resources(env)))
        assert [r.run_key for r in result.run_requests] == [other]
    row = env.state.get_batch_export(export_id)
    assert row.status == "FAILED" and "before it started the export" in row.log


def test_sensor_settles_a_row_whose_run_died(env):
    export_id = env.submit()
    with dg.instance_for_test() as instance:
        dead = instance.create_run_for_job(dg.GraphDefinition(name="g", node_defs=[]).to_job(name="dead"),
                                           status=dg.DagsterRunStatus.FAILURE)
        env.state.claim_batch_export(export_id, dead.run_id)
        defs = dg.Definitions.merge(build_batch_export_defs(env.settings), dg.Definitions(resources=resources(env)))
        defs.resolve_sensor_def("batch_export_requests_sensor")(
            dg.build_sensor_context(instance=instance, resources=resources(env)))
        row = env.state.get_batch_export(export_id)
        assert row.status == "FAILED" and dead.run_id in row.log and "request the export again" in row.log


@pytest.mark.parametrize("launch", ["export_id", "fields"])
def test_a_transient_fault_retries_the_step_with_the_same_row(seeded, tmp_path, s3_bucket, fault_proxy, s3_client,
                                                              launch):
    from exports_pipeline.resources.object_store.resource import ObjectStoreResource

    with local_env(seeded, tmp_path, **s3_settings(s3_bucket, fault_proxy.url)) as env:
        env.object_store = ObjectStoreResource(max_attempts=1, min_part_size_mb=5, default_part_size_mb=5)
        if launch == "export_id":
            config = {"export_id": env.submit(format="csv", limit=30)}
        else:  # the launchpad form: the first attempt stores the request, the retry must find it again
            config = {"project_id": "proj-1", "format": "csv", "limit": 30}
        fault_proxy.fail("PutObject", nth=1, status=503, code="SlowDown", message="Reduce your request rate")
        with dg.instance_for_test() as instance:
            result = job_of(env).execute_in_process(
                run_config={"ops": {"export_request": {"config": config}}}, instance=instance)
        assert result.success
        (stored,) = env.state.list_batch_exports()
        export_id = stored.id
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 1
        export = env.state.get_batch_export(export_id)
        assert export.status == "COMPLETED" and export.run_id == result.run_id and export.rows_written == 30
        assert len(env.state.list_batch_exports()) == 1
        body = s3_client.get_object(Bucket=s3_bucket, Key=export.object_key)["Body"].read()
        assert body.count(b"\r\n") >= 31


def test_retention_deletes_old_files_and_their_event_log_rows(env):
    old, recent = env.run(env.submit(limit=5)).export, env.run(env.submit(limit=5)).export
    later = old.finished_at + dt.timedelta(days=31)
    kept = purge_expired_files(env.state, env.object_store, env.with_settings(retention_days=0).settings, now=later)
    assert kept.exports == [] and (env.root / old.object_key).exists()
    # Only `old` is older than 30 days at `now`: make `recent` look recent.
    purged = purge_expired_files(env.state, env.object_store, env.settings,
                                 now=old.finished_at + dt.timedelta(days=30, microseconds=1))
    assert old.id in purged.exports
    assert not (env.root / old.object_key).exists()
    assert env.state.list_event_log(old.project_id, BATCH_EXPORT_ENTITY, old.id) == []
    row = env.state.get_batch_export(old.id)
    assert row.file_deleted_at is not None and row.url is None and "deleted 30 days after" in row.message
    if recent.id not in purged.exports:
        assert (env.root / recent.object_key).exists()
        assert env.state.list_event_log(recent.project_id, BATCH_EXPORT_ENTITY, recent.id)
    again = purge_expired_files(env.state, env.object_store, env.settings, now=later)
    assert old.id not in again.exports, "a deleted file is not deleted twice"


def test_retention_schedule_is_daily_and_running(env):
    (schedule,) = build_batch_export_defs(env.settings).schedules
    assert schedule.cron_schedule == "17 3 * * *" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
