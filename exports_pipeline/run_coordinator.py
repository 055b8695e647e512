"""The Dagster instance's run coordinator: the queued one, plus the tags every export run must carry.

`dagster.yaml` limits runs per project (`dagster/partition/project`) and the sinks' pools limit runs per
sink. Runs of the export jobs (schedules, sensors, the job's partitions page) and of backfills carry the
project tag and `exports/sink`, but a partition launched by hand from the asset page carries only
`dagster/partition` (its asset selection runs as `__ASSET_JOB`, and assets cannot give runs tags:
dagster-io/dagster#15752), so a tag limit would not see it. This coordinator adds what such a run lacks,
from its partition key and asset selection, before the run is queued; it is the only place Dagster lets
a deployment act on every run whoever launched it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dagster import AssetKey
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun

from exports_pipeline.state.models import SINK_BLOB, SINK_MIXPANEL, SINK_POSTHOG

PARTITION_TAG = "dagster/partition"
DATE_TAG = "dagster/partition/date"
PROJECT_TAG = "dagster/partition/project"
SINK_TAG_KEY = "exports/sink"
# Asset name prefix -> the sink its runs write to (the asset's pool has the same name).
SINK_OF_ASSET_PREFIX = {"blob_storage_export_": SINK_BLOB, "posthog_export": SINK_POSTHOG,
                        "mixpanel_export": SINK_MIXPANEL}


def missing_export_tags(tags: Mapping[str, str], asset_selection: Iterable[AssetKey] | None) -> dict[str, str]:
    """The sink and project tags an export run lacks (none for a run that exports nothing of ours)."""
    names = [key.path[-1] for key in asset_selection or ()]
    sinks = {sink for prefix, sink in SINK_OF_ASSET_PREFIX.items() for name in names if name.startswith(prefix)}
    if len(sinks) != 1:
        return {}
    out = {}
    if SINK_TAG_KEY not in tags:
        out[SINK_TAG_KEY] = next(iter(sinks))
    partition = tags.get(PARTITION_TAG, "")
    if PROJECT_TAG not in tags and partition.count("|") == 1:
        # A multi-partition key joins its dimensions in name order: date|project. Both dimension tags, as
        # Dagster sets them on backfill runs: with one of them only, Dagster would read the run's partition
        # from an incomplete set of dimension tags.
        out[DATE_TAG], out[PROJECT_TAG] = partition.split("|")
    return out


def missing_batch_export_tags(run: DagsterRun) -> dict[str, str]:
    """A `batch_export` run launched from the launchpad: the sink (from the job) is there, the project is
    in its config (or its stored request)."""
    if run.job_name != "batch_export" or PROJECT_TAG in run.tags:
        return {}
    from exports_pipeline.batch_export.defs import project_of_run
    from exports_pipeline.settings import get_settings
    from exports_pipeline.state.store import StateStore

    try:
        project = project_of_run(run.run_config, StateStore(database_url=get_settings().database_url))
    except Exception:  # noqa: BLE001 - a tag is not worth refusing the run; the run reports a bad request
        project = None
    return {PROJECT_TAG: project} if project else {}


class ExportsRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator (same configuration, same queue) that completes export runs' tags on submit."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        extra = missing_export_tags(run.tags, run.asset_selection) or missing_batch_export_tags(run)
        if extra:
            self._instance.add_run_tags(run.run_id, extra)
            refreshed = self._instance.get_run_by_id(run.run_id)
            if refreshed is not None:
                context = SubmitRunContext(refreshed, context.workspace)
        return super().submit_run(context)
