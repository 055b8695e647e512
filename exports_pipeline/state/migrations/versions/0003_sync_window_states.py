"""sync_windows records what a finished window delivered: its row count and max(event_ts).

API sinks (PostHog, Mixpanel) have no manifest; these are what the late-rows sensor compares with
ClickHouse to re-deliver a window whose source changed. NULL for windows finished before this revision
(and for object storage, whose manifests say it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_windows") as batch:
        batch.add_column(sa.Column("row_count", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_event_ts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_windows") as batch:
        batch.drop_column("max_event_ts")
        batch.drop_column("row_count")
