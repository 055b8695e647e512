"""The object-storage sink's plug-in: its integrations, how it delivers a window (`export.export_window`:
files per format, then the manifest), and what it delivered (the manifests).

Its persisted names predate the engine and stay as they are: assets `blob_storage_export_<frequency>`,
dynamic partitions `blob_storage_projects_<frequency>`, cursors `object_storage:<frequency>`, sensors
`blob_storage_integrations_sensor` and `blob_storage_late_rows_sensor`, event_log entity types
`blob_storage_export_<frequency>`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable

import dagster as dg

from exports_pipeline.crypto import SecretBox
from exports_pipeline.engine.runner import PartitionOutcome, run_window
from exports_pipeline.engine.sink import Delivered, WindowedSink, WindowJob, WindowState
from exports_pipeline.errors import ConfigError, ObjectNotFound
from exports_pipeline.settings import get_settings
from exports_pipeline.sinks.object_storage.export import ExportRequest, destination_for, export_window
from exports_pipeline.sinks.object_storage.keys import DEFAULT_KEY_TEMPLATE, KeyContext, manifest_key, validate_template
from exports_pipeline.state.models import SINK_BLOB, BlobIntegration, blob_cursor_sink
from exports_pipeline.windows import FREQUENCIES, Window, iso

ROW_COUNT_CHECK = "manifest_row_count_matches_source"


def secret_box() -> SecretBox | None:
    key = get_settings().encryption_key
    return SecretBox(key) if key else None


class ObjectStorageSink(WindowedSink):
    name = SINK_BLOB
    label = "object-storage"
    group = "object_storage"
    kinds = frozenset({"clickhouse", "s3"})
    frequencies = FREQUENCIES
    check_name = ROW_COUNT_CHECK
    check_description = "The manifest's row count equals ClickHouse's count for the window"
    resource_keys = ("object_store",)
    recorded_resource_keys = ("object_store",)
    continues_open_window = False
    records_deliveries = False  # the manifests are the record

    def __init__(self, box: SecretBox | None | bool = False) -> None:
        """`box`: the key for stored secrets; by default (False) the one of ENCRYPTION_KEY, read per run."""
        self._box = box

    def box(self) -> SecretBox | None:
        return secret_box() if self._box is False else self._box

    def asset_name(self, frequency: str) -> str:
        return f"blob_storage_export_{frequency}"

    def asset_description(self, frequency: str) -> str:
        return (f"Langfuse events of one project and one {frequency} window, in every configured format, "
                "with a manifest written last, in the project's bucket or directory.")

    def projects_dimension(self, frequency: str) -> str:
        return f"blob_storage_projects_{frequency}"

    def cursor_sink(self, frequency: str) -> str:
        return blob_cursor_sink(frequency)

    @property
    def history_sensor_name(self) -> str:
        return "blob_storage_integrations_sensor"

    @property
    def late_rows_sensor_name(self) -> str:
        return "blob_storage_late_rows_sensor"

    # ------------------------------------------------------------------------------ integrations

    def get_integration(self, state, project_id: str) -> BlobIntegration | None:
        return state.get_blob_integration(project_id)

    def list_enabled(self, state, frequency: str) -> list[BlobIntegration]:
        return state.list_blob_integrations(enabled=True, frequency=frequency)

    def frequency_of(self, integration: BlobIntegration) -> str:
        return integration.export_frequency

    def plan_id(self, integration: BlobIntegration) -> str:
        start = integration.export_start_date.isoformat() if integration.export_start_date else ""
        return hashlib.sha256(f"{integration.export_mode}|{start}".encode()).hexdigest()[:10]

    def starts_at(self, integration: BlobIntegration) -> dt.datetime | None:
        if integration.export_mode == "FULL_HISTORY":
            return None
        if integration.export_start_date is None:
            raise ConfigError(f"integration of {integration.project_id} has mode {integration.export_mode} "
                              "but no export_start_date", field="export_start_date")
        return integration.export_start_date

    def disable(self, state, project_id: str, error: str) -> None:
        state.disable_blob_integration(project_id, error=error)

    def record_error(self, state, project_id: str, error: str) -> None:
        state.record_blob_error(project_id, error)

    def mark_started(self, state, project_id: str) -> None:
        state.mark_blob_run_started(project_id)

    def mark_finished(self, state, project_id: str, last_sync_at: dt.datetime) -> None:
        state.mark_blob_run_finished(project_id, last_sync_at=last_sync_at)

    # ---------------------------------------------------------------------------------- delivery

    def deliver(self, job: WindowJob, *, clickhouse, state, resources: dict) -> Delivered:
        request = ExportRequest(job.project_id, job.frequency, job.window, job.partition_key, job.run_id)
        with resources["object_store"].open(destination_for(job.integration, self.box())) as store:
            result = export_window(clickhouse, store, job.integration, request, state=state, log=job.log)
        manifest = result.manifest
        per_format = {fmt: sum(f.rows for f in result.files if f.format == fmt) for fmt in manifest["formats"]}
        return Delivered(
            rows=result.rows, max_event_ts=manifest["source"]["max_event_ts"], seconds=result.seconds,
            uri=result.manifest_uri, consistent=all(n == result.rows for n in per_format.values()),
            metadata={
                "bytes": result.bytes,
                "files": len(result.files),
                "formats": ", ".join(manifest["formats"]),
                "stale_objects_deleted": len(result.deleted_stale),
                # the columns written (the deployed table's) and the registry columns it lacks, as in the manifest
                "dagster/column_schema": dg.TableSchema(columns=[
                    dg.TableColumn(c["name"], c["type"]) for c in manifest["columns"]]),
                "missing_columns": dg.MetadataValue.json(manifest["missing_columns"]),
            },
            check_metadata={"manifest_row_count": result.rows,
                            **{f"{fmt}_file_rows": n for fmt, n in per_format.items()}},
            result=result,
        )

    def recorded_states(self, *, state, resources: dict, integration: BlobIntegration, frequency: str,
                        windows: list[Window], log: Callable[[str], None]) -> dict[dt.datetime, WindowState]:
        with resources["object_store"].open(destination_for(integration, self.box())) as store:
            return read_manifest_states(store, integration, frequency, windows, log)


def read_manifest_states(store, integration: BlobIntegration, frequency: str, windows: list[Window],
                         log: Callable[[str], None]) -> dict[dt.datetime, WindowState]:
    """What each window's manifest says about its source; windows without a (readable) manifest of that
    very window are left out (the manifest is the commit point: a window without one is the history
    sensor's and the schedule's). Store faults other than a missing key propagate."""
    template = validate_template(integration.key_template or DEFAULT_KEY_TEMPLATE)
    out: dict[dt.datetime, WindowState] = {}
    for window in windows:
        key = manifest_key(template, KeyContext(store.destination.prefix, integration.project_id, frequency, window))
        try:
            raw = store.get_bytes(key)
        except ObjectNotFound:
            continue
        try:
            manifest = json.loads(raw)
            bounds = (manifest["window"]["start"], manifest["window"]["end"])
            source = manifest["source"]
            recorded = WindowState(int(source["row_count"]), source["max_event_ts"])
        except (ValueError, KeyError, TypeError):
            log(f"late rows: {store.uri(key)} is not a readable manifest; window left alone")
            continue
        # A custom key template may put another frequency's window of the same start in the same place.
        if bounds != (iso(window.start), iso(window.end)):
            continue
        out[window.start] = recorded
    return out


OBJECT_STORAGE = ObjectStorageSink()


def export_partition(*, clickhouse, object_store, state, box: SecretBox | None, frequency: str, project_id: str,
                     window: Window, partition_key: str, run_id: str,
                     log: Callable[[str], None] = lambda _m: None) -> PartitionOutcome:
    """One object-storage partition outside Dagster (tests, benchmarks, fault probes): the engine's runner
    with this plug-in and the given key for stored secrets."""
    return run_window(ObjectStorageSink(box), clickhouse=clickhouse, state=state,
                      resources={"object_store": object_store}, frequency=frequency, project_id=project_id,
                      window=window, partition_key=partition_key, run_id=run_id, log=log)
