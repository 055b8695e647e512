"""posthog_integrations.project_name: the display name Langfuse sends as `langfuse_project_name`.

Langfuse reads it from its projects table, which this pipeline does not have; the operator gives it with
`integrations add-posthog --project-name` (null until then: the property is sent as null).

Revision ID: 0003_posthog
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_posthog"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("posthog_integrations") as batch:
        batch.add_column(sa.Column("project_name", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("posthog_integrations") as batch:
        batch.drop_column("project_name")
