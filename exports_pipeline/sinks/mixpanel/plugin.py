"""The Mixpanel sink's plug-in: its integrations, one span of a project's events as `[Langfuse] Observation`
events through `/import` (`deliver.deliver_window`), and what it delivered (the engine's delivery records).

The same partitioning, freshness and history rules as PostHog (`sinks/posthog/plugin.py`): a project's day
per partition, continued hourly by the schedule, history from the project's first event. Events Mixpanel
refuses (a 400 with `failed_records`) are never retried: the valid ones are in, and the refused ones are
counted in the run's metadata and recorded in the integration's `last_error`, and the window's check fails.
"""

from __future__ import annotations

import datetime as dt

from exports_pipeline.crypto import SecretBox
from exports_pipeline.engine.sink import Delivered, WindowedSink, WindowJob, span_state
from exports_pipeline.errors import DeploymentFault
from exports_pipeline.settings import get_settings
from exports_pipeline.sinks.mixpanel.deliver import deliver_window
from exports_pipeline.state.models import SINK_MIXPANEL, MixpanelIntegration
from exports_pipeline.windows import iso

EVENTS_CHECK = "events_imported_match_source"


class MixpanelSink(WindowedSink):
    name = SINK_MIXPANEL
    label = "Mixpanel"
    group = "analytics"
    kinds = frozenset({"clickhouse", "mixpanel"})
    frequencies = ("daily",)
    check_name = EVENTS_CHECK
    check_description = ("Every event of what the run delivered (ClickHouse's FINAL count) was sent and imported "
                         "by Mixpanel")
    resource_keys = ("mixpanel",)
    continues_open_window = True
    records_deliveries = True

    def __init__(self, box: SecretBox | None | bool = False) -> None:
        self._box = box

    def asset_name(self, frequency: str) -> str:
        return "mixpanel_export"

    def asset_description(self, frequency: str) -> str:
        return ("One Mixpanel event per Langfuse span of one project and day through /import (Langfuse's own "
                "mapping and $insert_id); the hourly schedule sends each hour of the current day once it settled.")

    def projects_dimension(self, frequency: str) -> str:
        return "mixpanel_projects"

    def cursor_sink(self, frequency: str) -> str:
        return SINK_MIXPANEL

    def get_integration(self, state, project_id: str) -> MixpanelIntegration | None:
        return state.get_mixpanel_integration(project_id)

    def list_enabled(self, state, frequency: str) -> list[MixpanelIntegration]:
        return state.list_mixpanel_integrations(enabled=True)

    def frequency_of(self, integration) -> str:
        return "daily"

    def disable(self, state, project_id: str, error: str) -> None:
        state.disable_mixpanel_integration(project_id, error=error)

    def record_error(self, state, project_id: str, error: str) -> None:
        state.record_mixpanel_error(project_id, error)

    def mark_finished(self, state, project_id: str, last_sync_at: dt.datetime) -> None:
        state.mark_mixpanel_synced(project_id, last_sync_at)

    def _secret_box(self) -> SecretBox:
        box = self._box
        if box is False:
            key = get_settings().encryption_key
            box = SecretBox(key) if key else None
        if box is None:
            raise DeploymentFault("ENCRYPTION_KEY is not set, so the stored Mixpanel credentials cannot be "
                                  "decrypted", setting="ENCRYPTION_KEY")
        return box

    def deliver(self, job: WindowJob, *, clickhouse, state, resources: dict) -> Delivered:
        span = job.span
        before = span_state(clickhouse, job.project_id, span, job.run_id, SINK_MIXPANEL)
        client = resources["mixpanel"].client(job.integration, self._secret_box())
        delivery = deliver_window(clickhouse, client, job.integration, project_id=job.project_id, window=span,
                                  run_id=job.run_id, historical=False, log=job.log,
                                  langfuse_url=get_settings().langfuse_url)
        if delivery.failed:  # the valid events are in; the refused ones are the customer's to look at
            state.record_mixpanel_error(job.project_id, delivery.error_text())
        return Delivered(
            rows=delivery.events, max_event_ts=before[1], seconds=delivery.seconds, consistent=delivery.complete,
            metadata={**delivery.metadata(), "span": f"[{iso(span.start)}, {iso(span.end)})"},
            check_metadata={"events_sent": delivery.events, "imported": delivery.imported,
                            "failed": delivery.failed, "failed_samples": list(delivery.failed_samples)},
            result=delivery,
        )


MIXPANEL = MixpanelSink()
