"""event_log records where each object was written: endpoint, region and destination prefix.

Before this, a row knew only (bucket_name, bucket_path), so `export-objects delete` reached the bucket
through the project's *current* endpoint: after an endpoint change it deleted a foreign object with the same
key on the new server and dropped the rows of the real export. The unique key becomes (endpoint,
bucket_name, bucket_path): the same bucket and key on two servers are two objects.

Existing rows are backfilled from the project's integration as it is now (the best knowledge there is):
its endpoint and region when its bucket is the row's bucket, and its prefix when the key starts with it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BACKFILL = """
UPDATE event_log SET
  endpoint = COALESCE((SELECT i.endpoint FROM blob_storage_integrations i
                       WHERE i.project_id = event_log.project_id AND i.type <> 'LOCAL'
                         AND i.bucket_name = event_log.bucket_name AND i.endpoint IS NOT NULL), ''),
  region = (SELECT i.region FROM blob_storage_integrations i
            WHERE i.project_id = event_log.project_id AND i.type <> 'LOCAL'
              AND i.bucket_name = event_log.bucket_name),
  prefix = COALESCE((SELECT i.prefix FROM blob_storage_integrations i
                     WHERE i.project_id = event_log.project_id AND i.bucket_name = event_log.bucket_name
                       AND substr(event_log.bucket_path, 1, length(i.prefix)) = i.prefix), '')
"""


def upgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.add_column(sa.Column("endpoint", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("region", sa.Text(), nullable=True))
        batch.add_column(sa.Column("prefix", sa.Text(), nullable=False, server_default=""))
    op.execute(_BACKFILL)
    # SQLite rebuilds the table for the constraint; it re-reads the new defaults as "('')" unless told.
    with op.batch_alter_table("event_log", reflect_args=[
        sa.Column("endpoint", sa.Text(), nullable=False, server_default=""),
        sa.Column("prefix", sa.Text(), nullable=False, server_default=""),
    ]) as batch:
        batch.drop_constraint("uq_event_log_bucket_name_bucket_path", type_="unique")
        batch.create_unique_constraint("uq_event_log_endpoint_bucket_name_bucket_path",
                                       ["endpoint", "bucket_name", "bucket_path"])


def downgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.drop_constraint("uq_event_log_endpoint_bucket_name_bucket_path", type_="unique")
        batch.create_unique_constraint("uq_event_log_bucket_name_bucket_path", ["bucket_name", "bucket_path"])
        batch.drop_column("prefix")
        batch.drop_column("region")
        batch.drop_column("endpoint")
