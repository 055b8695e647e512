"""The one place that wires assets, jobs, schedules, sensors and resources into the code location."""

from __future__ import annotations

import dagster as dg

from exports_pipeline.engine.assets import build_blob_storage_defs
from exports_pipeline.source_profile import events_source_profile, source_profile_job
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import Settings, get_settings
from exports_pipeline.state.store import StateStore


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "clickhouse": ClickHouseResource(url=settings.clickhouse_url, events_table=settings.events_table),
        "state": StateStore(database_url=settings.database_url),
        "object_store": ObjectStoreResource(),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or get_settings()
    blob = build_blob_storage_defs(settings.partitions_start, settings.settle_minutes,
                                   late_rows_lookback_hours=settings.late_rows_lookback_hours,
                                   late_rows_interval_seconds=settings.late_rows_interval_seconds)
    return dg.Definitions(
        assets=[events_source_profile, *blob["assets"]],
        jobs=[source_profile_job, *blob["jobs"]],
        schedules=blob["schedules"],
        sensors=blob["sensors"],
        resources=build_resources(settings),
    )


defs = build_definitions()
