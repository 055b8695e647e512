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
