"""Batch export requests: what a request carries beyond Langfuse's columns, and what a run records.

Langfuse's `batch_exports` row knows a status, a stored URL and a `log`. A request here also carries its
compression and the address to mail, and a run records what it did honestly: rows written and rows
that matched (so a truncation is never silent), bytes, the object, the run that owns the row (a step
retry of the same run carries on with it), when it started, a cancel request for a running export, and
when the retention schedule deleted the file. `message` holds what the person should know besides a
failure (`log`): the truncation in words, a mail that could not be sent.

Frozen like 0001: types spelled out, never imported from `tables.py`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("compression", lambda: sa.Column("compression", sa.Text(), nullable=False, server_default="none")),
    ("email", lambda: sa.Column("email", sa.Text(), nullable=True)),
    ("rows_matched", lambda: sa.Column("rows_matched", sa.BigInteger(), nullable=True)),
    ("rows_written", lambda: sa.Column("rows_written", sa.BigInteger(), nullable=True)),
    ("truncated", lambda: sa.Column("truncated", sa.Boolean(), nullable=False, server_default=sa.false())),
    ("bytes", lambda: sa.Column("bytes", sa.BigInteger(), nullable=True)),
    ("object_uri", lambda: sa.Column("object_uri", sa.Text(), nullable=True)),
    ("object_key", lambda: sa.Column("object_key", sa.Text(), nullable=True)),
    ("message", lambda: sa.Column("message", sa.Text(), nullable=True)),
    ("run_id", lambda: sa.Column("run_id", sa.Text(), nullable=True)),
    ("started_at", lambda: sa.Column("started_at", sa.DateTime(timezone=True), nullable=True)),
    ("cancel_requested_at", lambda: sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True)),
    ("file_deleted_at", lambda: sa.Column("file_deleted_at", sa.DateTime(timezone=True), nullable=True)),
)


def upgrade() -> None:
    for _name, column in _COLUMNS:
        op.add_column("batch_exports", column())
    # The retention schedule looks for finished exports older than N days.
    op.create_index("ix_batch_exports_finished_at", "batch_exports", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_exports_finished_at", table_name="batch_exports")
    with op.batch_alter_table("batch_exports") as batch:  # SQLite drops columns by rebuilding the table
        for name, _column in reversed(_COLUMNS):
            batch.drop_column(name)
