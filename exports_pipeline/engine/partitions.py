"""Time x project partitions of every windowed sink, one definition per sink and frequency, and the one
codec of their keys.

Dimensions are `date` (the window) and `project` (a dynamic dimension per sink and frequency, kept equal
to the enabled integrations by the sink's integrations sensor), so keys read `2026-11-19|proj-a` and
`2026-11-19-10:00|proj-a`. Windows are UTC; weeks start on Monday. A sink that delivers the current window
hour by hour (`continues_open_window`) has the current window as a partition too (`end_offset=1`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import dagster as dg

from exports_pipeline.windows import FREQUENCIES

# Dagster cannot use a dynamic key containing these (multi-partition keys are joined with "|").
_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def check_project_id(project_id: str) -> str:
    if not isinstance(project_id, str) or not _PROJECT_ID.match(project_id):
        raise ValueError(
            f"project id {project_id!r} cannot be a Dagster partition key: use 1-128 characters of letters, digits "
            "and . _ : @ - (no '|', ',', '[', ']', spaces or slashes), starting with a letter or digit"
        )
    return project_id


def project_partitions(sink, frequency: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=sink.projects_dimension(frequency))


def time_partitions(frequency: str, start: str, end_offset: int = 0) -> dg.TimeWindowPartitionsDefinition:
    if frequency == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=f"{start}-00:00", timezone="UTC", end_offset=end_offset)
    if frequency == "daily":
        return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=end_offset)
    if frequency == "weekly":
        first = dt.date.fromisoformat(start)
        monday = first + dt.timedelta(days=(7 - first.weekday()) % 7)
        return dg.WeeklyPartitionsDefinition(start_date=monday.isoformat(), day_offset=1, timezone="UTC",
                                             end_offset=end_offset)
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


def partition_key(time_fmt: str, start: dt.datetime, project: str) -> dg.MultiPartitionKey:
    """The key of `project`'s window starting at `start` (`time_fmt`: the time dimension's format)."""
    return dg.MultiPartitionKey({"date": start.strftime(time_fmt), "project": project})


def project_of_key(key: str) -> str:
    """The project of a `date|project` key (dimensions join in name order)."""
    return key.rpartition("|")[2]


def window_partitions(sink, frequency: str, start: str) -> dg.MultiPartitionsDefinition:
    partitions_def = dg.MultiPartitionsDefinition({
        "date": time_partitions(frequency, start, end_offset=1 if sink.continues_open_window else 0),
        "project": project_partitions(sink, frequency)})
    _explain_unknown_keys(partitions_def, sink, frequency)
    return partitions_def


# ------------------------------------------------------------------------------- unknown partition keys


def _explain_unknown_keys(partitions_def: dg.MultiPartitionsDefinition, sink, frequency: str) -> None:
    """Make Dagster's "Could not find a partition with key" say why, for this definition only.

    Dagster checks a key before any of our code runs (`dagster asset materialize --partition`, a run
    request, `execute_in_process`), with one message for a mistyped date, a project that does not exist
    and a project whose integration exists but whose partition the sensor has not registered yet; the
    last one needs only a minute's wait, the others a fix. The check is wrapped on this object rather than
    in a subclass because Dagster stores partition subsets with the definition's class name and refuses to
    read them back under another one.
    """
    dagster_check = partitions_def.validate_partition_key

    def validate_partition_key(partition_key, context=None, **kwargs):
        try:
            return dagster_check(partition_key, context=context, **kwargs)
        except dg.DagsterUnknownPartitionError as exc:
            raise dg.DagsterUnknownPartitionError(
                unknown_key_message(partitions_def, frequency, str(partition_key),
                                    lambda project: _lookup_integration(sink, project), sink=sink) or str(exc)
            ) from None

    partitions_def.validate_partition_key = validate_partition_key  # type: ignore[method-assign]


def unknown_key_message(partitions_def: dg.MultiPartitionsDefinition, frequency: str, key: str,
                        lookup: Callable[[str], object], *, sink=None) -> str | None:
    """Why `key` is not a partition of the sink's `frequency` asset; `lookup(project)` is the project's
    integration (None without one) and may raise. None when the reason is not one of ours."""
    if sink is None:
        from exports_pipeline.sinks.object_storage.plugin import OBJECT_STORAGE as sink
    asset = sink.asset_name(frequency)
    time_def = partitions_def.get_partitions_def_for_dimension("date")
    example = f"{time_def.get_first_partition_key() or '2026-11-19'}|proj-a"
    try:
        dims = partitions_def.get_partition_key_from_str(key).keys_by_dimension
    except Exception:  # Dagster's CheckError for anything that is not "date|project"
        return f"`{key}` is not a partition key of {asset}: keys are date|project, e.g. `{example}`"
    date, project = dims["date"], dims["project"]
    if not time_def.has_partition_key(date):
        return (f"`{key}`: {date!r} is not a {frequency} window of {asset} (keys are date|project, e.g. "
                f"`{example}`; windows start at {time_def.get_first_partition_key()} and end before now)")
    try:
        integration = lookup(project)
    except Exception as exc:  # the state database is down: say what is known, and why no more
        return (f"`{key}`: project {project!r} is not a registered partition of {asset} (could not read its "
                f"integration: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    if integration is None:
        return (f"`{key}`: no such project: {project!r} has no {sink.label} integration "
                "(`exports-pipeline integrations list` shows the projects that have one)")
    has = sink.frequency_of(integration)
    if has != frequency:
        return (f"`{key}`: project {project!r} exports {has}, not {frequency}: its partitions belong to "
                f"{sink.asset_name(has)}")
    if not getattr(integration, "enabled", True):
        return (f"`{key}`: project {project!r} has an integration (frequency {has}) but it is disabled, so "
                f"its partition is not registered: `exports-pipeline integrations enable --project {project}`, "
                f"then {sink.history_sensor_name} registers it on its next tick")
    return (f"`{key}`: project {project!r} has an integration (frequency {has}) but its partition is not "
            f"registered yet: {sink.history_sensor_name} registers it on its next tick (every minute while "
            "`dagster dev` or `dagster-daemon run` runs with the sensor on); try again after that tick")


def _lookup_integration(sink, project: str):
    from exports_pipeline.settings import get_settings
    from exports_pipeline.state.store import StateStore

    return sink.get_integration(StateStore(database_url=get_settings().database_url), project)


def register_project(sink, frequency: str, project: str) -> str:
    """Add `project` to the sink's project dimension in the configured Dagster instance now, so a partition
    can be launched by hand at once instead of after the integrations sensor's next tick. Returns what
    happened, in words: without DAGSTER_HOME there is no instance to register in, and the sensor of the
    deployment's instance does it on its next tick."""
    import os

    dimension = sink.projects_dimension(frequency)
    if not os.environ.get("DAGSTER_HOME"):
        return (f"no Dagster instance is configured here (DAGSTER_HOME is not set): {sink.history_sensor_name} "
                f"registers {project} in {dimension} on its next tick")
    try:
        with dg.DagsterInstance.get() as instance:
            if project not in instance.get_dynamic_partitions(dimension):
                instance.add_dynamic_partitions(dimension, [project])
    except Exception as exc:  # the instance is misconfigured or unreachable: the sensor still registers it
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (f"could not register {project} in {dimension} of the Dagster instance at DAGSTER_HOME ({first}); "
                f"{sink.history_sensor_name} registers it on its next tick")
    return f"registered {project} in {dimension}: its partitions can be launched now"
