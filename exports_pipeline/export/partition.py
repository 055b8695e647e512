"""One partition of a scheduled export, from the integration row to the advanced cursor.

This is where faults are sorted: the customer's (bad credentials, missing bucket, denied, a host name
that does not resolve) disable the integration and are recorded in `last_error`. The deployment's
(an ENCRYPTION_KEY that cannot decrypt the stored secret, an events table the export cannot read) are
not the customer's doing: the integration stays enabled and its `last_error` untouched (that column
tells the customer what to fix), the fault, naming the setting, goes on the sync cursor's `last_error`
(cleared by the next finished window) and on the failed run, which is not retried. Anything else
(outages, timeouts, 5xx) is recorded and re-raised for Dagster's retry policy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from exports_pipeline.crypto import SecretBox
from exports_pipeline.errors import ConfigError, CustomerFault, DeploymentFault
from exports_pipeline.events.queries import first_event_sql
from exports_pipeline.export.blob import ExportRequest, ExportResult, destination_for, export_window
from exports_pipeline.export.windows import Window, window_floor
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.state.models import BlobIntegration, blob_cursor_sink


@dataclass(frozen=True)
class PartitionOutcome:
    exported: bool
    reason: str
    result: ExportResult | None = None


def first_event_at(clickhouse: ClickHouseResource, project_id: str) -> dt.datetime | None:
    rows = clickhouse.query_dicts(first_event_sql(clickhouse.events_table), {"project_id": project_id})
    if not rows or not int(rows[0]["rows"]):
        return None
    first = rows[0]["first"]
    return first if first.tzinfo else first.replace(tzinfo=dt.UTC)


def history_start(integration: BlobIntegration, clickhouse: ClickHouseResource) -> dt.datetime | None:
    """Where this integration's history begins: the project's first event (FULL_HISTORY; None while the
    project has none, never the epoch), or the configured start date, floored to a window start."""
    if integration.export_mode == "FULL_HISTORY":
        first = first_event_at(clickhouse, integration.project_id)
        return window_floor(first, integration.export_frequency) if first else None
    if integration.export_start_date is None:
        raise ConfigError(f"integration of {integration.project_id} has mode {integration.export_mode} "
                          "but no export_start_date", field="export_start_date")
    return window_floor(integration.export_start_date, integration.export_frequency)


def _cursor_origin(state, sink: str, integration: BlobIntegration, clickhouse: ClickHouseResource,
                   window: Window) -> dt.datetime:
    """Where the cursor starts, needed only until it has a position: so the project's first event (a
    FINAL scan of the whole project for FULL_HISTORY) is looked up once, not on every run."""
    cursor = state.get_cursor(sink, integration.project_id)
    if cursor is not None and cursor.last_sync_at is not None:
        return cursor.last_sync_at
    return history_start(integration, clickhouse) or window.start


def export_partition(
    *,
    clickhouse: ClickHouseResource,
    object_store,
    state,
    box: SecretBox | None,
    frequency: str,
    project_id: str,
    window: Window,
    partition_key: str,
    run_id: str,
    log: Callable[[str], None] = lambda _m: None,
) -> PartitionOutcome:
    integration = state.get_blob_integration(project_id)
    if integration is None:
        return PartitionOutcome(False, f"project {project_id} has no object-storage integration")
    if not integration.enabled:
        return PartitionOutcome(False, f"the integration of {project_id} is disabled"
                                + (f" (last error: {integration.last_error})" if integration.last_error else ""))
    if integration.export_frequency != frequency:
        return PartitionOutcome(False, f"the integration of {project_id} exports {integration.export_frequency}, "
                                f"not {frequency}")
    sink = blob_cursor_sink(frequency)
    if integration.export_mode != "FULL_HISTORY":
        start = history_start(integration, clickhouse)  # from the stored date: no query
        if window.end <= start:
            return PartitionOutcome(False, f"window ends before the integration's start date {start:%Y-%m-%d %H:%M}Z")

    request = ExportRequest(project_id, frequency, window, partition_key, run_id)
    state.mark_blob_run_started(project_id)
    try:
        with object_store.open(destination_for(integration, box)) as store:
            result = export_window(clickhouse, store, integration, request, state=state, log=log)
    except DeploymentFault as exc:  # ours to fix: never disables, never blames the customer
        state.record_cursor_error(sink, project_id, f"{type(exc).__name__}: {exc} (setting: {exc.setting})")
        raise
    except (CustomerFault, ConfigError) as exc:  # the stored configuration is the customer's to fix
        state.disable_blob_integration(project_id, error=str(exc))
        state.record_cursor_error(sink, project_id, str(exc))
        raise
    except Exception as exc:
        state.record_blob_error(project_id, f"{type(exc).__name__}: {exc}")
        state.record_cursor_error(sink, project_id, f"{type(exc).__name__}: {exc}")
        raise
    cursor = state.finish_window(sink, project_id, window.start, window.end, run_id,
                                 origin=_cursor_origin(state, sink, integration, clickhouse, window))
    state.mark_blob_run_finished(project_id, last_sync_at=cursor.last_sync_at)
    return PartitionOutcome(True, "exported", result)
