"""The run coordinator's tag completion (its effect on real queued runs is in defs/test_backfill_daemon.py)."""

from __future__ import annotations

import dagster as dg

from exports_pipeline.run_coordinator import missing_export_tags

DAILY = [dg.AssetKey("blob_storage_export_daily")]


def test_a_hand_launched_export_run_gets_its_project_and_sink():
    assert missing_export_tags({"dagster/partition": "2026-11-19|proj-a"}, DAILY) == {
        "exports/sink": "object_storage", "dagster/partition/date": "2026-11-19",
        "dagster/partition/project": "proj-a"}
    hourly = [dg.AssetKey("blob_storage_export_hourly")]
    assert missing_export_tags({"dagster/partition": "2026-11-19-10:00|p.1"}, hourly)["dagster/partition/project"] == "p.1"


def test_tags_a_run_already_has_are_kept():
    tags = {"dagster/partition": "2026-11-19|proj-a", "dagster/partition/project": "proj-a",
            "exports/sink": "object_storage"}
    assert missing_export_tags(tags, DAILY) == {}


def test_runs_that_are_not_one_export_get_nothing():
    assert missing_export_tags({"dagster/partition": "2026-11-19|proj-a"}, [dg.AssetKey("events_source_profile")]) == {}
    assert missing_export_tags({"dagster/partition": "2026-11-19|proj-a"}, None) == {}
    # no partition key (or not a date|project one): the sink only
    assert missing_export_tags({}, DAILY) == {"exports/sink": "object_storage"}
    assert missing_export_tags({"dagster/partition": "2026-11-19"}, DAILY) == {"exports/sink": "object_storage"}


def test_a_launchpad_batch_export_run_gets_its_project(tmp_path):
    from dagster._core.storage.dagster_run import DagsterRun

    from exports_pipeline.batch_export.defs import project_of_run
    from exports_pipeline.run_coordinator import missing_batch_export_tags
    from exports_pipeline.state.store import StateStore

    fields = {"ops": {"export_request": {"config": {"project_id": "proj-9", "format": "csv"}}}}
    run = DagsterRun(job_name="batch_export", run_config=fields, tags={"exports/sink": "batch_export"})
    assert missing_batch_export_tags(run) == {"dagster/partition/project": "proj-9"}
    tagged = DagsterRun(job_name="batch_export", run_config=fields, tags={"dagster/partition/project": "proj-9"})
    assert missing_batch_export_tags(tagged) == {}
    assert missing_batch_export_tags(DagsterRun(job_name="other", run_config=fields)) == {}

    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    stored = state.create_batch_export("proj-4", "u", "n", {"version": 1}, "CSV")
    by_id = {"ops": {"export_request": {"config": {"export_id": stored.id}}}}
    assert project_of_run(by_id, state) == "proj-4"
    assert project_of_run({"ops": {"export_request": {"config": {"export_id": "missing"}}}}, state) is None
    state.dispose()
