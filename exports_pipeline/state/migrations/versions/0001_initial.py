"""Initial state schema: integrations, batch exports, event log, sync cursors and finished windows.

Written by hand and frozen: later schema changes get their own revision, never an edit here.
Types are spelled out rather than imported from `tables.py` so this file keeps meaning what it meant.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str, nullable: bool = False, **kw) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable, **kw)


def _flag(name: str, default: bool) -> sa.Column:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true() if default else sa.false())


def _json(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "blob_storage_integrations",
        _text("project_id"),
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
        _json("export_field_groups", nullable=True),
        _flag("compressed", False),
        _json("export_tuning", nullable=True),
        _ts("run_started_at"),
        _text("last_error", nullable=True),
        _ts("last_error_at"),
        _ts("last_failure_notification_sent_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _json("file_types", nullable=False),
        _text("compression", server_default="none"),
        _text("sse", nullable=True),
        _text("sse_kms_key_id", nullable=True),
        sa.Column("max_file_size_mb", sa.Integer(), nullable=True),
        _text("key_template", nullable=True),
        sa.PrimaryKeyConstraint("project_id", name="pk_blob_storage_integrations"),
    )
    op.create_table(
        "posthog_integrations",
        _text("project_id"),
        _text("encrypted_posthog_api_key"),
        _text("posthog_host_name"),
        _ts("last_sync_at"),
        _flag("enabled", True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _text("export_source", server_default="EVENTS"),
        _text("last_error", nullable=True),
        _ts("last_error_at"),
        sa.PrimaryKeyConstraint("project_id", name="pk_posthog_integrations"),
    )
    op.create_table(
        "mixpanel_integrations",
        _text("project_id"),
        _text("encrypted_mixpanel_project_token"),
        _text("mixpanel_region", server_default="api"),
        _ts("last_sync_at"),
        _flag("enabled", True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _text("export_source", server_default="EVENTS"),
        _text("last_error", nullable=True),
        _ts("last_error_at"),
        sa.PrimaryKeyConstraint("project_id", name="pk_mixpanel_integrations"),
    )
    op.create_table(
        "batch_exports",
        _text("id"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _text("project_id"),
        _text("user_id"),
        _ts("finished_at"),
        _ts("expires_at"),
        _text("name"),
        _text("status"),
        _json("query", nullable=False),
        _text("format"),
        _text("url", nullable=True),
        _text("log", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_batch_exports"),
    )
    op.create_index("ix_batch_exports_project_id_user_id", "batch_exports", ["project_id", "user_id"])
    op.create_index("ix_batch_exports_status", "batch_exports", ["status"])
    op.create_table(
        "event_log",
        _text("id"),
        _text("bucket_name"),
        _text("bucket_path"),
        _text("project_id"),
        _text("entity_type"),
        _text("entity_id"),
        _text("event_id"),
        _text("trace_id", nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_log"),
        sa.UniqueConstraint("bucket_name", "bucket_path", name="uq_event_log_bucket_name_bucket_path"),
    )
    op.create_index(
        "ix_event_log_project_id_entity_type_entity_id", "event_log", ["project_id", "entity_type", "entity_id"]
    )
    op.create_table(
        "sync_cursors",
        _text("sink"),
        _text("project_id"),
        _ts("last_sync_at"),
        _text("last_run_id", nullable=True),
        _text("last_error", nullable=True),
        _ts("last_error_at"),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("sink", "project_id", name="pk_sync_cursors"),
    )
    op.create_table(
        "sync_windows",
        _text("sink"),
        _text("project_id"),
        _ts("window_start", nullable=False),
        _ts("window_end", nullable=False),
        _text("run_id", nullable=True),
        _ts("finished_at", nullable=False),
        sa.PrimaryKeyConstraint("sink", "project_id", "window_start", name="pk_sync_windows"),
    )


def downgrade() -> None:
    op.drop_table("sync_windows")
    op.drop_table("sync_cursors")
    op.drop_index("ix_event_log_project_id_entity_type_entity_id", table_name="event_log")
    op.drop_table("event_log")
    op.drop_index("ix_batch_exports_status", table_name="batch_exports")
    op.drop_index("ix_batch_exports_project_id_user_id", table_name="batch_exports")
    op.drop_table("batch_exports")
    op.drop_table("mixpanel_integrations")
    op.drop_table("posthog_integrations")
    op.drop_table("blob_storage_integrations")
