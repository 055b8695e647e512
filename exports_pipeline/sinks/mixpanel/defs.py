"""Mixpanel's Dagster objects: the engine's, built from the plug-in (asset `mixpanel_export`, group
`analytics`, daily x `mixpanel_projects` partitions, an hourly schedule, history and late-rows sensors)."""

from __future__ import annotations

import dagster as dg

from exports_pipeline.engine.definitions import sink_objects
from exports_pipeline.settings import Settings
from exports_pipeline.sinks.mixpanel.plugin import MIXPANEL


def definitions(settings: Settings, *, clock=None) -> dg.Definitions:
    return dg.Definitions(**sink_objects(
        MIXPANEL, partitions_start=settings.partitions_start, settle_minutes=settings.settle_minutes,
        late_rows_lookback_hours=settings.late_rows_lookback_hours,
        late_rows_interval_seconds=settings.late_rows_interval_seconds, clock=clock))
