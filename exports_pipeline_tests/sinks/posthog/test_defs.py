"""PostHog through Dagster: one partition materialized (events received, check passed, cursor and delivery
record), the hourly schedule's tick, the history plan, the late-rows sensor on the delivery records."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline.engine.definitions import sink_objects
from exports_pipeline.resources.posthog import PostHogResource
from exports_pipeline.sinks.posthog.plugin import PostHogSink
from exports_pipeline.state.models import PostHogIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.posthog_peers import API_KEY
from exports_pipeline_tests.seeded_events import DAY_START
from exports_pipeline_tests.sinks.contract import source_span_ids
from exports_pipeline.windows import Window

KEY = "2f" * 32
DAY = "2026-11-02"


@pytest.fixture
def env(seeded, tmp_path, posthog_peer, monkeypatch):
    monkeypatch.setenv("ENCRYPTION_KEY", KEY)
    from exports_pipeline.settings import get_settings

    get_settings.cache_clear()
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    objects = sink_objects(PostHogSink(SecretBox(KEY)), partitions_start="2026-10-01", settle_minutes=15,
                           clock=lambda: dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC))
    resources = {"clickhouse": seeded, "state": state,
                 "posthog": PostHogResource(max_attempts=3, backoff_base_seconds=0.01, backoff_max_seconds=0.05)}
    defs = dg.Definitions(**objects, resources=resources)
    with dg.instance_for_test() as instance:
        yield {"defs": defs, "state": state, "instance": instance, "resources": resources, "peer": posthog_peer,
               "clickhouse": seeded}
    state.dispose()
    get_settings.cache_clear()


def add(env, project: str = "proj-1") -> None:
    env["state"].upsert_posthog_integration(PostHogIntegration(
        project_id=project, encrypted_posthog_api_key=SecretBox(KEY).encrypt(API_KEY),
        posthog_host_name=env["peer"].url))
    env["instance"].add_dynamic_partitions("posthog_projects", [project])


def test_a_partition_materialized_through_dagster(env):
    add(env)
    asset = env["defs"].get_assets_def("posthog_export")
    result = dg.materialize([asset], partition_key=f"{DAY}|proj-1", instance=env["instance"],
                            resources=env["resources"])
    assert result.success
    day = Window(DAY_START, DAY_START + dt.timedelta(days=1))
    expected = source_span_ids(env["clickhouse"], "proj-1", day)
    got = sorted(e["properties"]["langfuse_id"] for e in env["peer"].events.values())
    assert got == expected
    materialization = result.asset_materializations_for_node("posthog_export")[0]
    assert materialization.metadata["events"].value == len(expected)
    assert materialization.metadata["historical_migration"].value is True  # the window is weeks old
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["events_sent"].value == len(expected)
    assert env["state"].get_cursor("posthog", "proj-1").last_sync_at == day.end
    assert env["state"].delivered_states("posthog", "proj-1", [day])[day.start].rows == len(expected)


def test_hourly_schedule_requests_the_day_that_holds_the_settled_hour(env):
    add(env, "proj-1")
    add(env, "proj-2")
    schedule = env["defs"].get_schedule_def("posthog_export_schedule")
    assert schedule.cron_schedule == "15 * * * *"
    at = dt.datetime(2026, 11, 5, 0, 15, tzinfo=dt.UTC)  # 23:00-24:00 of the 4th just settled
    requests = list(schedule.evaluate_tick(dg.build_schedule_context(instance=env["instance"], repository_def=env["defs"].get_repository_def(),
                                                                     scheduled_execution_time=at)).run_requests)
    assert sorted(r.partition_key for r in requests) == ["2026-11-04|proj-1", "2026-11-04|proj-2"]
    at = dt.datetime(2026, 11, 5, 10, 15, tzinfo=dt.UTC)
    requests = list(schedule.evaluate_tick(dg.build_schedule_context(instance=env["instance"], repository_def=env["defs"].get_repository_def(),
                                                                     scheduled_execution_time=at)).run_requests)
    assert sorted(r.partition_key for r in requests) == ["2026-11-05|proj-1", "2026-11-05|proj-2"]
    assert len({r.run_key for r in requests}) == 2


def test_history_starts_at_the_projects_first_event(env):
    add(env)
    sensor = env["defs"].get_sensor_def("posthog_integrations_sensor")
    result = sensor(dg.build_sensor_context(instance=env["instance"], resources=env["resources"],
                                            definitions=env["defs"]))
    keys = [r.partition_key for r in result.run_requests]
    assert keys[0] == f"{DAY}|proj-1"  # the seeded project's first day, not the epoch or partitions start
    assert all(r.tags["exports/sink"] == "posthog" for r in result.run_requests)
