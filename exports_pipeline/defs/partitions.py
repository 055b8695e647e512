"""Time x project partitions, one definition per frequency.

Dimensions are `date` (the window) and `project` (a dynamic dimension per frequency, kept equal to
the enabled integrations of that frequency by the integrations sensor), so keys read
`2026-11-19|proj-a` and `2026-11-19-10:00|proj-a`. Windows are UTC; weeks start on Monday.
"""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg

from exports_pipeline.export.windows import FREQUENCIES

# Dagster cannot use a dynamic key containing these (multi-partition keys are joined with "|").
_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def check_project_id(project_id: str) -> str:
    if not isinstance(project_id, str) or not _PROJECT_ID.match(project_id):
        raise ValueError(
            f"project id {project_id!r} cannot be a Dagster partition key: use 1-128 characters of letters, digits "
            "and . _ : @ - (no '|', ',', '[', ']', spaces or slashes), starting with a letter or digit"
        )
    return project_id


def project_partitions(frequency: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"blob_storage_projects_{frequency}")


def time_partitions(frequency: str, start: str) -> dg.TimeWindowPartitionsDefinition:
    if frequency == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=f"{start}-00:00", timezone="UTC")
    if frequency == "daily":
        return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC")
    if frequency == "weekly":
        first = dt.date.fromisoformat(start)
        monday = first + dt.timedelta(days=(7 - first.weekday()) % 7)
        return dg.WeeklyPartitionsDefinition(start_date=monday.isoformat(), day_offset=1, timezone="UTC")
    raise ValueError(f"unknown frequency {frequency!r}; expected one of {list(FREQUENCIES)}")


def project_and_window(partitions_def: dg.MultiPartitionsDefinition,
                       partition_key: str | dg.MultiPartitionKey) -> tuple[str, dt.datetime, dt.datetime]:
    """The project and the window [start, end) of a partition. A run tagged with the key alone (what the
    asset page sends for one partition: no per-dimension tags) gives the asset a plain string such as
    `2026-11-19|proj-a` instead of a MultiPartitionKey, so the key is parsed here, not trusted to be one."""
    if not isinstance(partition_key, dg.MultiPartitionKey):
        partition_key = partitions_def.get_partition_key_from_str(partition_key)
    dims = partition_key.keys_by_dimension
    time_def = partitions_def.get_partitions_def_for_dimension("date")
    window = time_def.time_window_for_partition_key(dims["date"])
    return dims["project"], window.start, window.end


def export_partitions(frequency: str, start: str) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({"date": time_partitions(frequency, start),
                                         "project": project_partitions(frequency)})
