"""The PostHog sink's plug-in: its integrations, one span of a project's events as PostHog events
(`deliver.deliver_window`), and what it delivered (the engine's delivery records in `sync_windows`).

Granularity: a partition is a project's day, and the hourly schedule sends the hours of the current day that
settled since the last run (`continues_open_window`), so an event reaches PostHog within the settle delay
plus an hour of its window's end, while a year of history is 365 runs, not 8,760 (README: the figure).
History starts at the project's first event. Windows that ended more than 48 h before the run go out with
`historical_migration` (PostHog's bulk path for old events).
"""

from __future__ import annotations

import datetime as dt
import logging

from exports_pipeline.crypto import SecretBox
from exports_pipeline.engine.sink import Delivered, WindowedSink, WindowJob, span_state
from exports_pipeline.errors import DeploymentFault
from exports_pipeline.settings import get_settings
from exports_pipeline.sinks.posthog.deliver import deliver_window
from exports_pipeline.state.models import SINK_POSTHOG, PostHogIntegration
from exports_pipeline.windows import iso

HISTORICAL_AFTER = dt.timedelta(hours=48)
EVENTS_CHECK = "events_sent_match_source"


class _RunLog(logging.LoggerAdapter):
    """`deliver_window` logs with %-formatting; the run's log takes finished lines."""

    def __init__(self, sink) -> None:
        super().__init__(logging.getLogger(__name__), {})
        self._sink = sink

    def log(self, level, msg, *args, **kwargs) -> None:
        self._sink(msg % args if args else msg)


class PostHogSink(WindowedSink):
    name = SINK_POSTHOG
    label = "PostHog"
    group = "analytics"
    kinds = frozenset({"clickhouse", "posthog"})
    frequencies = ("daily",)
    check_name = EVENTS_CHECK
    check_description = "The events sent equal ClickHouse's count (FINAL) of what the run delivered"
    resource_keys = ("posthog",)
    continues_open_window = True
    records_deliveries = True

    def __init__(self, box: SecretBox | None | bool = False, now=None) -> None:
        self._box = box
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    def asset_name(self, frequency: str) -> str:
        return "posthog_export"

    def asset_description(self, frequency: str) -> str:
        return ("One PostHog event per Langfuse span of one project and day (Langfuse's own mapping and uuids); "
                "the hourly schedule sends each hour of the current day once it has settled.")

    def projects_dimension(self, frequency: str) -> str:
        return "posthog_projects"

    def cursor_sink(self, frequency: str) -> str:
        return SINK_POSTHOG

    def get_integration(self, state, project_id: str) -> PostHogIntegration | None:
        return state.get_posthog_integration(project_id)

    def list_enabled(self, state, frequency: str) -> list[PostHogIntegration]:
        return state.list_posthog_integrations(enabled=True)

    def frequency_of(self, integration) -> str:
        return "daily"

    def disable(self, state, project_id: str, error: str) -> None:
        state.disable_posthog_integration(project_id, error=error)

    def record_error(self, state, project_id: str, error: str) -> None:
        state.record_posthog_error(project_id, error)

    def mark_finished(self, state, project_id: str, last_sync_at: dt.datetime) -> None:
        state.mark_posthog_synced(project_id, last_sync_at)

    def _api_key(self, integration: PostHogIntegration) -> str:
        box = self._box
        if box is False:
            key = get_settings().encryption_key
            box = SecretBox(key) if key else None
        if box is None:
            raise DeploymentFault("ENCRYPTION_KEY is not set, so the stored PostHog key cannot be decrypted",
                                  setting="ENCRYPTION_KEY")
        return box.decrypt(integration.encrypted_posthog_api_key)

    def deliver(self, job: WindowJob, *, clickhouse, state, resources: dict) -> Delivered:
        span = job.span
        # What the span holds now: recorded with the delivery, so the late-rows sensor sees any change made
        # after this moment (a row that arrives while sending is sent, and then re-checked).
        before = span_state(clickhouse, job.project_id, span, job.run_id, SINK_POSTHOG)
        posthog = resources["posthog"]
        client = posthog.client(job.integration.posthog_host_name, self._api_key(job.integration))
        historical = span.end <= self._now() - HISTORICAL_AFTER
        delivery = deliver_window(clickhouse, client, job.integration, project_id=job.project_id, window=span,
                                  run_id=job.run_id, historical=historical, log=_RunLog(job.log),
                                  langfuse_url=get_settings().langfuse_url,
                                  max_request_bytes=posthog.max_request_bytes, max_event_bytes=posthog.max_event_bytes)
        return Delivered(
            rows=delivery.events, max_event_ts=before[1], seconds=delivery.seconds,
            metadata={**delivery.metadata(), "span": f"[{iso(span.start)}, {iso(span.end)})"},
            check_metadata={"events_sent": delivery.events, "events_cut": delivery.events_cut},
            result=delivery,
        )


POSTHOG = PostHogSink()
