"""The pipeline's own tables: the single definition the migrations are checked against.

Enumerated values (type, frequency, mode, status, format, region) are plain text validated in Python
(`state.models`), not database enums or CHECK constraints: Langfuse keeps `export_frequency` as text for the
same reason, and on SQLite every new allowed value would otherwise need a table rebuild.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC in Python on every backend.

    PostgreSQL stores `timestamptz` and hands back the session's zone; SQLite has no zone at all and hands
    back naive values. Binding converts to UTC (and, on SQLite, drops the now-redundant tzinfo so the
    stored text is uniform and sorts correctly); loading attaches or converts to UTC. Naive input is
    refused: guessing the zone of a cursor is how windows get skipped.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def JSONType() -> sa.types.TypeEngine:
    """JSON text on SQLite, `jsonb` on PostgreSQL (Langfuse's type for `query` and `export_tuning`)."""
    return sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def _text(name: str, nullable: bool = False, **kw) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable, **kw)


def _flag(name: str, default: bool) -> sa.Column:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true() if default else sa.false())


blob_storage_integrations = sa.Table(
    "blob_storage_integrations",
    metadata,
    _text("project_id", primary_key=True),
    _text("type"),
    _text("bucket_name"),
    _text("prefix"),
    _text("access_key_id", nullable=True),
    _text("secret_access_key", nullable=True),
    _text("region", server_default="auto"),
    _text("endpoint", nullable=True),
    _flag("force_path_style", False),
    _ts("next_sync_at"),
    _ts("last_sync_at"),
    _flag("enabled", True),
    _text("export_frequency"),
    _text("export_mode", server_default="FULL_HISTORY"),
    _ts("export_start_date"),
    _text("export_source", server_default="EVENTS"),
    sa.Column("export_field_groups", JSONType(), nullable=True),
    _flag("compressed", False),
    sa.Column("export_tuning", JSONType(), nullable=True),
    _ts("run_started_at"),
    _text("last_error", nullable=True),
    _ts("last_error_at"),
    _ts("last_failure_notification_sent_at"),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    # Ours, beyond Langfuse's columns.
    sa.Column("file_types", JSONType(), nullable=False),
    _text("compression", server_default="none"),
    _text("sse", nullable=True),
    _text("sse_kms_key_id", nullable=True),
    sa.Column("max_file_size_mb", sa.Integer(), nullable=True),
    _text("key_template", nullable=True),
)

posthog_integrations = sa.Table(
    "posthog_integrations",
    metadata,
    _text("project_id", primary_key=True),
    _text("encrypted_posthog_api_key"),
    _text("posthog_host_name"),
    _ts("last_sync_at"),
    _flag("enabled", True),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    _text("export_source", server_default="EVENTS"),
    _text("last_error", nullable=True),
    _ts("last_error_at"),
    # Ours (0003): Langfuse's project name, sent as `langfuse_project_name` (Langfuse reads its projects table).
    _text("project_name", nullable=True),
)

mixpanel_integrations = sa.Table(
    "mixpanel_integrations",
    metadata,
    _text("project_id", primary_key=True),
    _text("encrypted_mixpanel_project_token", nullable=True),  # NULL with a service account (0003)
    _text("mixpanel_region", server_default="api"),
    _ts("last_sync_at"),
    _flag("enabled", True),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    _text("export_source", server_default="EVENTS"),
    _text("last_error", nullable=True),
    _ts("last_error_at"),
    # Ours, beyond Langfuse's columns (0003): a service account instead of the project token, and a base
    # URL that replaces https://{region}.mixpanel.com (a proxy, a test receiver).
    _text("mixpanel_service_account_username", nullable=True),
    _text("encrypted_mixpanel_service_account_secret", nullable=True),
    _text("mixpanel_project_id", nullable=True),
    _text("endpoint", nullable=True),
)

batch_exports = sa.Table(
    "batch_exports",
    metadata,
    _text("id", primary_key=True),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    _text("project_id"),
    _text("user_id"),
    _ts("finished_at"),
    _ts("expires_at"),
    _text("name"),
    _text("status"),
    sa.Column("query", JSONType(), nullable=False),
    _text("format"),
    _text("url", nullable=True),
    _text("log", nullable=True),
    # Ours (migration 0002): the request beyond Langfuse's columns, and what its run recorded.
    _text("compression", server_default="none"),
    _text("email", nullable=True),
    sa.Column("rows_matched", sa.BigInteger(), nullable=True),
    sa.Column("rows_written", sa.BigInteger(), nullable=True),
    _flag("truncated", False),
    sa.Column("bytes", sa.BigInteger(), nullable=True),
    _text("object_uri", nullable=True),
    _text("object_key", nullable=True),
    _text("message", nullable=True),
    _text("run_id", nullable=True),
    _ts("started_at"),
    _ts("cancel_requested_at"),
    _ts("file_deleted_at"),
    sa.Index("ix_batch_exports_project_id_user_id", "project_id", "user_id"),
    sa.Index("ix_batch_exports_status", "status"),
    sa.Index("ix_batch_exports_finished_at", "finished_at"),
)

event_log = sa.Table(
    "event_log",
    metadata,
    _text("id", primary_key=True),
    _text("bucket_name"),
    _text("bucket_path"),
    _text("project_id"),
    _text("entity_type"),
    _text("entity_id"),
    _text("event_id"),
    _text("trace_id", nullable=True),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    # Where the object was written (0002): the S3 endpoint ('' = AWS's own for `region`, and for local
    # directories, whose bucket_name is the absolute path), and the destination prefix of the writing
    # integration, so deletes act on that place and stale cleanup stays inside that destination.
    _text("endpoint", server_default=sa.text("''")),
    _text("region", nullable=True),
    _text("prefix", server_default=sa.text("''")),
    sa.UniqueConstraint("endpoint", "bucket_name", "bucket_path"),
    sa.Index("ix_event_log_project_id_entity_type_entity_id", "project_id", "entity_type", "entity_id"),
)

sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    _text("sink", primary_key=True),
    _text("project_id", primary_key=True),
    _ts("last_sync_at"),
    _text("last_run_id", nullable=True),
    _text("last_error", nullable=True),
    _ts("last_error_at"),
    _ts("updated_at", nullable=False),
)

# One row per finished window, so the cursor can advance only over a gap-free run of them.
sync_windows = sa.Table(
    "sync_windows",
    metadata,
    _text("sink", primary_key=True),
    _text("project_id", primary_key=True),
    sa.Column("window_start", UTCDateTime(), primary_key=True),
    _ts("window_end", nullable=False),
    _text("run_id", nullable=True),
    _ts("finished_at", nullable=False),
    # What was delivered (0003): API sinks compare these with ClickHouse to re-deliver changed windows.
    sa.Column("row_count", sa.BigInteger(), nullable=True),
    _text("max_event_ts", nullable=True),
)
