"""One partition of any windowed sink, from the integration row to the advanced cursor.

This is where faults are sorted, the same way for every sink: the customer's (bad credentials, missing
bucket, denied, a host name that does not resolve, a stored setting that no longer validates) disable
the integration and are recorded in its `last_error`. The deployment's (an ENCRYPTION_KEY that cannot
decrypt the stored secret, an events table the export cannot read) are not the customer's doing: the
integration stays enabled and its `last_error` untouched (that column tells the customer what to fix),
the fault, naming the setting, goes on the sync cursor's `last_error` (cleared by the next finished
window) and on the failed run, which is not retried. Anything else (outages, timeouts, 5xx) is recorded
and re-raised for Dagster's retry policy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from exports_pipeline.engine.sink import Delivered, WindowedSink, WindowJob
from exports_pipeline.errors import ConfigError, CustomerFault, DeploymentFault
from exports_pipeline.resources.clickhouse import in_one_session
from exports_pipeline.windows import Window


@dataclass(frozen=True)
class PartitionOutcome:
    exported: bool
    reason: str
    delivered: Delivered | None = None
    span: Window | None = None  # what this run delivered of the partition's window

    @property
    def result(self):
        """The sink's own result object (object storage: `ExportResult`)."""
        return self.delivered.result if self.delivered else None


def _cursor_origin(sink: WindowedSink, state, cursor_name: str, integration, clickhouse,
                   window: Window) -> dt.datetime:
    """Where the cursor starts, needed only until it has a position: so the project's first event (a
    FINAL scan of the whole project) is looked up once, not on every run."""
    cursor = state.get_cursor(cursor_name, integration.project_id)
    if cursor is not None and cursor.last_sync_at is not None:
        return cursor.last_sync_at
    return sink.history_start(integration, clickhouse) or window.start


def span_to_deliver(sink: WindowedSink, state, cursor_name: str, project_id: str, window: Window,
                    now: dt.datetime, settle: dt.timedelta) -> tuple[Window | None, bool]:
    """What this run delivers of `window`, and whether it replaces earlier deliveries of it.

    A sink that delivers whole windows delivers the window. One that continues open windows sends what
    settled (`now - settle`) since the delivery records end; when nothing new settled, the run is a
    re-delivery (late rows, or a partition launched by hand) and sends everything settled again.
    """
    if not sink.continues_open_window:
        return window, True
    cut = min(window.end, now - settle)
    if cut <= window.start:
        return None, False
    through = window.start
    for start, end, _rows, _ts in state.finished_pieces(cursor_name, project_id, window.start, window.end):
        if start > through:
            break
        through = max(through, end)
    if through < cut:
        return Window(through, cut), through == window.start
    return Window(window.start, cut), True


@in_one_session
def run_window(
    sink: WindowedSink,
    *,
    clickhouse,
    state,
    resources: dict,
    frequency: str,
    project_id: str,
    window: Window,
    partition_key: str,
    run_id: str,
    settle: dt.timedelta = dt.timedelta(0),
    now: dt.datetime | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> PartitionOutcome:
    integration = sink.get_integration(state, project_id)
    if integration is None:
        return PartitionOutcome(False, f"project {project_id} has no {sink.label} integration")
    if not integration.enabled:
        return PartitionOutcome(False, f"the {sink.label} integration of {project_id} is disabled"
                                + (f" (last error: {integration.last_error})" if integration.last_error else ""))
    has = sink.frequency_of(integration)
    if has != frequency:
        return PartitionOutcome(False, f"the {sink.label} integration of {project_id} exports {has}, not {frequency}")
    configured = sink.starts_at(integration)
    if configured is not None:
        start = sink.history_start(integration, clickhouse)  # from the stored date: no query
        if start is not None and window.end <= start:
            return PartitionOutcome(False, f"window ends before the integration's start date {start:%Y-%m-%d %H:%M}Z")

    cursor_name = sink.cursor_sink(frequency)
    span, whole = span_to_deliver(sink, state, cursor_name, project_id, window,
                                  now or dt.datetime.now(dt.UTC), settle)
    if span is None:
        return PartitionOutcome(False, f"nothing of {partition_key} has settled yet (settle {settle})")
    job = WindowJob(project_id, frequency, window, span, partition_key, run_id, integration, log)
    sink.mark_started(state, project_id)
    try:
        delivered = sink.deliver(job, clickhouse=clickhouse, state=state, resources=resources)
    except DeploymentFault as exc:  # ours to fix: never disables, never blames the customer
        state.record_cursor_error(cursor_name, project_id, f"{type(exc).__name__}: {exc} (setting: {exc.setting})")
        raise
    except (CustomerFault, ConfigError) as exc:  # the stored configuration is the customer's to fix
        sink.disable(state, project_id, str(exc))
        state.record_cursor_error(cursor_name, project_id, str(exc))
        raise
    except Exception as exc:
        sink.record_error(state, project_id, f"{type(exc).__name__}: {exc}")
        state.record_cursor_error(cursor_name, project_id, f"{type(exc).__name__}: {exc}")
        raise
    if whole and sink.records_deliveries:
        state.forget_pieces(cursor_name, project_id, span.start, span.end)
    record = delivered.state if sink.records_deliveries else None
    cursor = state.finish_window(cursor_name, project_id, span.start, span.end, run_id,
                                 origin=_cursor_origin(sink, state, cursor_name, integration, clickhouse, window),
                                 rows=record.rows if record else None,
                                 max_event_ts=record.max_event_ts if record else None)
    sink.mark_finished(state, project_id, cursor.last_sync_at)
    return PartitionOutcome(True, "exported", delivered, span)
