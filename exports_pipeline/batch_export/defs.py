"""Batch exports in Dagster: the `batch_export` job, the sensor that launches queued requests, and the
daily retention schedule.

A run is one request: the launchpad form is either the id of a QUEUED request or the request's own
fields (the run then stores the request itself, already owned by the run, so no sensor launches it
again). `batch_export_requests_sensor` launches one run per QUEUED row (run key: the export id, so
never twice) tagged with the sink and the project tag `dagster.yaml` limits per project. Follow a run:
`batch_export` op -> `runner.run_batch_export` -> ClickHouse and the object store.
"""

# (no `from __future__ import annotations`: Dagster reads the op and config annotations at runtime)

import dagster as dg
from pydantic import Field

from exports_pipeline.batch_export.faults import diagnose
from exports_pipeline.batch_export.notify import notify
from exports_pipeline.batch_export.request import BatchRequest, submit
from exports_pipeline.batch_export.retention import purge_expired_files
from exports_pipeline.batch_export.runner import SINK, BatchOutcome, ClaimLost, run_batch_export
from exports_pipeline.errors import ConfigError
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.mailer import MailerResource
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.run_coordinator import PROJECT_TAG, SINK_TAG_KEY
from exports_pipeline.settings import BatchExportSettings
from exports_pipeline.state.store import StateStore

JOB = "batch_export"
OP = "export_request"  # the job's one op; its config is the launchpad form (ops.export_request.config)
EXPORT_ID_TAG = "exports/batch_export_id"
MAX_RETRIES = 3  # attempts after the first, for transient faults (ClickHouse or storage unreachable)


class BatchExportConfig(dg.Config):
    """Either `export_id` (a QUEUED request, e.g. from `exports-pipeline batch-export create`) or the
    request's fields below, as the CLI takes them."""

    export_id: str = Field(default="", description="Id of a QUEUED request; leave empty to describe one below")
    project_id: str = Field(default="", description="Project whose events to export (with no export_id)")
    format: str = Field(default="csv", description="csv, json, jsonl or parquet")
    compression: str = Field(default="none", description="none, gzip or zstd (text formats)")
    filter: str = Field(default="[]", description="Langfuse filter JSON of the events table, as its UI sends it")
    search: str = Field(default="", description="Text to search for, matched literally, case-insensitive")
    search_types: list[str] = Field(default=["id"], description="Where to search: id, content, input, output")
    order_by: str = Field(default="startTime:desc", description="COLUMN[:asc|desc] of the file's columns")
    columns: str = Field(default="", description="Comma-separated subset of the columns; empty: all")
    limit: int = Field(default=0, description="At most this many rows; 0: EXPORTS_BATCH_EXPORT_ROW_LIMIT")
    name: str = Field(default="", description="A name for the export (default: time, table and format)")
    user_id: str = Field(default="dagster", description="Who asked")
    email: str = Field(default="", description="Mail the link (or the failure) to this address")

    def request(self) -> BatchRequest:
        return BatchRequest(project_id=self.project_id, format=self.format, compression=self.compression,
                            filter=self.filter, search=self.search or None, search_types=list(self.search_types),
                            order_by=self.order_by, columns=self.columns or None, limit=self.limit,
                            name=self.name or None, user_id=self.user_id, email=self.email or None)


RUN_RETRIES_TAG = "dagster/max_retries"  # Dagster's run retries (dagster.yaml `run_retries`)


def run_config(export_id: str) -> dict:
    return {"ops": {OP: {"config": {"export_id": export_id}}}}


def run_tags(project_id: str, export_id: str) -> dict[str, str]:
    """The sink and project tags the concurrency limits of dagster.yaml count, and the export id."""
    return {SINK_TAG_KEY: SINK, PROJECT_TAG: project_id, EXPORT_ID_TAG: export_id}


def build_batch_export_defs(settings: BatchExportSettings, *, retry_seconds: float = 10.0,
                            cancel_poll_seconds: float = 1.0, sensor_interval_seconds: int = 30) -> dg.Definitions:
    @dg.op(name=OP, pool=SINK, tags={SINK_TAG_KEY: SINK}, out=dg.Out(dg.Nothing),
           description="One batch export request: filtered events -> one file -> link -> e-mail.")
    def batch_export_op(context: dg.OpExecutionContext, config: BatchExportConfig, clickhouse: ClickHouseResource,
                        object_store: ObjectStoreResource, state: StateStore, mailer: MailerResource):
        export_id = _export_id(context, config, state, settings)
        context.instance.add_run_tags(context.run_id, {EXPORT_ID_TAG: export_id})
        try:
            outcome = run_batch_export(export_id, clickhouse=clickhouse, object_store=object_store, state=state,
                                       settings=settings, run_id=context.run_id, log=context.log.info,
                                       cancel_poll_seconds=cancel_poll_seconds)
        except ClaimLost as exc:
            context.log.warning(str(exc))
            return dg.Output(None, metadata={"status": "skipped", "reason": str(exc)})
        except Exception as exc:
            _fail(context, exc, export_id, clickhouse, state, mailer, settings, retry_seconds)
        return _finish(context, outcome, state, mailer)

    # Not run again when its process dies (dagster.yaml retries those runs): the request's row belongs to
    # the dead run, and the sensor settles it FAILED, naming that run, for the person to request it again.
    @dg.job(name=JOB, tags={SINK_TAG_KEY: SINK, RUN_RETRIES_TAG: "0"},
            description="A filtered one-off export of a project's events to one downloadable file "
            "(launch with an export_id, or fill in the request).")
    def job():
        batch_export_op()

    @dg.sensor(name="batch_export_requests_sensor", job=job, minimum_interval_seconds=sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Launches one batch_export run per QUEUED request (run key: the export id).")
    def requests_sensor(context: dg.SensorEvaluationContext, state: StateStore):
        _settle_abandoned(context, state)
        queued = _settle_unstarted(context, state, list(reversed(state.list_batch_exports(status="QUEUED"))))
        requests = [  # oldest first
            dg.RunRequest(run_key=e.id, run_config=run_config(e.id), tags=run_tags(e.project_id, e.id))
            for e in queued
        ]
        return dg.SensorResult(run_requests=requests)

    @dg.op(name="delete_expired_files", description="Deletes export files older than the retention and "
           "their event_log rows (EXPORTS_BATCH_EXPORT_RETENTION_DAYS; 0 keeps them).")
    def retention_op(context: dg.OpExecutionContext, object_store: ObjectStoreResource, state: StateStore):
        purged = purge_expired_files(state, object_store, settings, log=context.log.info)
        context.add_output_metadata({"exports": len(purged.exports), "objects": purged.objects,
                                     "skipped": len(purged.skipped)})

    @dg.job(name="batch_export_retention", tags={SINK_TAG_KEY: SINK})
    def retention_job():
        retention_op()
    schedule = dg.ScheduleDefinition(name="batch_export_retention_schedule", job=retention_job,
                                     cron_schedule="17 3 * * *", execution_timezone="UTC",
                                     default_status=dg.DefaultScheduleStatus.RUNNING)
    return dg.Definitions(jobs=[job, retention_job], sensors=[requests_sensor], schedules=[schedule])


def _export_id(context, config: BatchExportConfig, state: StateStore, settings: BatchExportSettings) -> str:
    """The request this run works on: the given id, or the one this run stored from its fields (a step
    retry finds it again instead of storing a second one)."""
    if config.export_id:
        return config.export_id
    owned = state.list_batch_exports(run_id=context.run_id)
    if owned:
        return owned[0].id
    try:
        return submit(state, config.request(), settings.row_limit, claimed_by_run=context.run_id).id
    except ConfigError as exc:
        raise dg.Failure(description=f"the request is not valid, nothing was stored: {exc}",
                         allow_retries=False) from None


def _fail(context, exc: Exception, export_id: str, clickhouse, state, mailer, settings, retry_seconds) -> None:
    """Retry a transient fault while attempts remain; otherwise record FAILED with advice, mail, fail."""
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else ""
    diagnosis = diagnose(exc, destination=settings.store_destination().url, table=clickhouse.events_table,
                         secrets=(secret,))
    if diagnosis.transient and context.retry_number < MAX_RETRIES:
        state.record_batch_export_progress(
            export_id, message=f"attempt {context.retry_number + 1} failed, retrying: {diagnosis.message}")
        wait = retry_seconds * 2 ** context.retry_number  # exponential backoff between step attempts
        raise dg.RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=wait) from exc
    failed = state.fail_batch_export(export_id, diagnosis.message)
    warning = notify(mailer, state, failed) if failed else None
    if warning:
        context.log.warning(warning)
    raise dg.Failure(description=diagnosis.message, allow_retries=False,
                     metadata={"export_id": export_id, "status": "FAILED"}) from None


def _finish(context, outcome: BatchOutcome, state, mailer) -> dg.Output:
    warning = notify(mailer, state, outcome.export)
    if warning:
        context.log.warning(warning)
        outcome.export = state.get_batch_export(outcome.export.id) or outcome.export
    metadata = outcome.metadata()
    if outcome.status == "CANCELLED":
        raise dg.Failure(description=f"batch export {outcome.export.id} was cancelled: {outcome.export.message}",
                         metadata=metadata, allow_retries=False)
    return dg.Output(None, metadata=metadata)


def _settle_unstarted(context, state: StateStore, queued: list) -> list:
    """QUEUED rows whose launched run already ended without claiming them (its worker or resources failed
    before the op ran) are FAILED with the run named, instead of waiting forever; the rest are returned."""
    waiting = []
    for export in queued:
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={EXPORT_ID_TAG: export.id}), limit=5)
        if runs and all(run.is_finished for run in runs):
            state.fail_batch_export(export.id, f"its run {runs[0].run_id} ended ({runs[0].status.value}) before it "
                                    "started the export; see that run in Dagster, then request the export again")
        else:
            waiting.append(export)
    return waiting


def _settle_abandoned(context, state: StateStore) -> None:
    """PROCESSING rows whose run ended without finishing them are settled: a run terminated from the UI
    (its upload aborted by the interrupted step) or with a cancel requested becomes CANCELLED, a crashed
    one FAILED with what to do."""
    for export in state.list_batch_exports(status="PROCESSING"):
        run = context.instance.get_run_by_id(export.run_id) if export.run_id else None
        if run is None or not run.is_finished:
            continue
        if export.cancel_requested_at is not None or run.status == dg.DagsterRunStatus.CANCELED:
            state.acknowledge_batch_export_cancel(export.id, "cancelled: its run was terminated; the upload was "
                                                  "aborted and no file was kept")
        else:
            state.fail_batch_export(export.id, f"its run {export.run_id} ended ({run.status.value}) without finishing "
                                    "the export (terminated or crashed); request the export again")


def submit_and_run(settings, state, request: BatchRequest, instance: dg.DagsterInstance):
    """`create --run` (and the demo): store the request owned by a new run, so no sensor launches it too,
    then run the `batch_export` job in this process with the code location's own resources."""
    import uuid

    from exports_pipeline.definitions import build_definitions

    run_id = str(uuid.uuid4())  # Dagster's run id format
    export = submit(state, request, settings.batch_export.row_limit, claimed_by_run=run_id)
    job = build_definitions(settings).resolve_job_def(JOB)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    job.execute_in_process(run_config={**run_config(export.id), **quiet},
                           instance=instance, run_id=run_id, raise_on_error=False,
                           tags=run_tags(export.project_id, export.id))
    return state.get_batch_export(export.id)


def project_of_run(run_config: dict, state: StateStore | None) -> str | None:
    """The project a `batch_export` run exports, from its launchpad config (fields or a stored request's
    id), so a run launched by hand gets the project tag the per-project limit counts."""
    config = ((run_config or {}).get("ops", {}).get(OP) or {}).get("config") or {}
    if config.get("export_id") and state is not None:
        export = state.get_batch_export(config["export_id"])
        return export.project_id if export else None
    return config.get("project_id") or None
