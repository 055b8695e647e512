"""A windowed sink's Dagster objects in one place: per frequency an asset, a job and a schedule, plus the
sink's integrations (history) sensor and late-rows sensor. `sinks/<sink>/defs.py` hands its plug-in here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from exports_pipeline.engine.assets import build_job, build_schedule, build_window_asset
from exports_pipeline.engine.history import build_history_sensor
from exports_pipeline.engine.late_rows import build_late_rows_sensor
from exports_pipeline.engine.sink import WindowedSink


def sink_objects(sink: WindowedSink, *, partitions_start: str, settle_minutes: int,
                 late_rows_lookback_hours: int = 72, late_rows_interval_seconds: int = 900,
                 clock: Callable[[], dt.datetime] | None = None) -> dict:
    """{"assets", "jobs", "schedules", "sensors"} of one sink; `clock` (an aware datetime callable) is "now"
    for the late-rows sensor, the wall clock by default."""
    assets = {f: build_window_asset(sink, f, partitions_start, settle_minutes) for f in sink.frequencies}
    jobs = {f: build_job(sink, f, assets[f]) for f in sink.frequencies}
    schedules = [build_schedule(sink, f, jobs[f], settle_minutes) for f in sink.frequencies]
    sensors = [
        build_history_sensor(sink, jobs, assets, partitions_start, settle_minutes),
        build_late_rows_sensor(sink, jobs, assets, partitions_start=partitions_start, settle_minutes=settle_minutes,
                               lookback_hours=late_rows_lookback_hours, interval_seconds=late_rows_interval_seconds,
                               clock=clock),
    ]
    return {"assets": list(assets.values()), "jobs": list(jobs.values()), "schedules": schedules, "sensors": sensors}
