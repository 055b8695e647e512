"""Object storage's Dagster objects: the engine's, built from the plug-in (group `object_storage`)."""

from __future__ import annotations

import dagster as dg

from exports_pipeline.engine.definitions import sink_objects
from exports_pipeline.settings import Settings
from exports_pipeline.sinks.object_storage.plugin import OBJECT_STORAGE


def build_blob_storage_defs(partitions_start: str, settle_minutes: int, *, late_rows_lookback_hours: int = 72,
                            late_rows_interval_seconds: int = 900, clock=None) -> dict:
    return sink_objects(OBJECT_STORAGE, partitions_start=partitions_start, settle_minutes=settle_minutes,
                        late_rows_lookback_hours=late_rows_lookback_hours,
                        late_rows_interval_seconds=late_rows_interval_seconds, clock=clock)


def definitions(settings: Settings) -> dg.Definitions:
    objects = build_blob_storage_defs(settings.partitions_start, settings.settle_minutes,
                                      late_rows_lookback_hours=settings.late_rows_lookback_hours,
                                      late_rows_interval_seconds=settings.late_rows_interval_seconds)
    return dg.Definitions(**objects)
