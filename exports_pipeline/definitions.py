"""The one place that wires assets, jobs, schedules, sensors and resources into the code location."""

from __future__ import annotations

import os

import dagster as dg

from exports_pipeline.batch_export.defs import build_batch_export_defs
from exports_pipeline.defs.blob_storage import build_blob_storage_defs
from exports_pipeline.defs.source_profile import events_source_profile, source_profile_job
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.mailer import MailerResource
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import Settings, get_settings
from exports_pipeline.state.store import StateStore


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "clickhouse": ClickHouseResource(url=settings.clickhouse_url, events_table=settings.events_table),
        "state": StateStore(database_url=settings.database_url),
        "object_store": ObjectStoreResource(),
        "mailer": MailerResource(smtp_url=settings.batch_export.smtp_url.get_secret_value()
                                 if settings.batch_export.smtp_url else "",
                                 email_from=settings.batch_export.email_from or "",
                                 ca_file=os.environ.get("EXPORTS_SMTP_CA_FILE", "").strip()),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or get_settings()
    blob = build_blob_storage_defs(settings.partitions_start, settings.settle_minutes,
                                   late_rows_lookback_hours=settings.late_rows_lookback_hours,
                                   late_rows_interval_seconds=settings.late_rows_interval_seconds)
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[events_source_profile, *blob["assets"]],
            jobs=[source_profile_job, *blob["jobs"]],
            schedules=blob["schedules"],
            sensors=blob["sensors"],
            resources=build_resources(settings),
        ),
        build_batch_export_defs(settings.batch_export),
    )


defs = build_definitions()
