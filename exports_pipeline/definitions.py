"""The one place that wires the sinks' Definitions, batch export's and the shared resources into the code
location."""

from __future__ import annotations

import os

import dagster as dg

from exports_pipeline.batch_export.defs import build_batch_export_defs
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.mailer import MailerResource
from exports_pipeline.resources.mixpanel import MixpanelResource
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.resources.posthog import PostHogResource
from exports_pipeline.settings import Settings, get_settings
from exports_pipeline.sinks.mixpanel import defs as mixpanel
from exports_pipeline.sinks.object_storage import defs as object_storage
from exports_pipeline.sinks.posthog import defs as posthog
from exports_pipeline.source_profile import events_source_profile, source_profile_job
from exports_pipeline.state.store import StateStore


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "clickhouse": ClickHouseResource(url=settings.clickhouse_url, events_table=settings.events_table),
        "state": StateStore(database_url=settings.database_url),
        "object_store": ObjectStoreResource(),
        "posthog": PostHogResource(),
        "mixpanel": MixpanelResource(),
        "mailer": MailerResource(smtp_url=settings.batch_export.smtp_url.get_secret_value()
                                 if settings.batch_export.smtp_url else "",
                                 email_from=settings.batch_export.email_from or "",
                                 ca_file=os.environ.get("EXPORTS_SMTP_CA_FILE", "").strip()),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or get_settings()
    return dg.Definitions.merge(
        dg.Definitions(assets=[events_source_profile], jobs=[source_profile_job]),
        object_storage.definitions(settings),
        posthog.definitions(settings),
        mixpanel.definitions(settings),
        build_batch_export_defs(settings.batch_export),
        dg.Definitions(resources=build_resources(settings)),
    )


defs = build_definitions()
