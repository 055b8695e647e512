"""mixpanel_integrations learns service accounts and an endpoint override.

Mixpanel's `/import` takes a project token (Langfuse's only credential, so its only column) or an
Owner/Admin service account with the numeric project id (Mixpanel's recommended way). An integration holds
exactly one of the two, so the token column becomes nullable. `endpoint` replaces the regional base URL
`https://{region}.mixpanel.com` (a proxy, a test receiver). The error fields (`last_error`,
`last_error_at`) were already created by 0001.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_NEW = ("mixpanel_service_account_username", "encrypted_mixpanel_service_account_secret", "mixpanel_project_id",
        "endpoint")


def upgrade() -> None:
    with op.batch_alter_table("mixpanel_integrations") as batch:
        batch.alter_column("encrypted_mixpanel_project_token", existing_type=sa.Text(), nullable=True)
        for name in _NEW:
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    # A service-account row has no token and cannot survive the NOT NULL: refuse rather than drop it.
    without_token = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM mixpanel_integrations WHERE encrypted_mixpanel_project_token IS NULL")).scalar_one()
    if without_token:
        raise RuntimeError(f"{without_token} Mixpanel integration(s) use a service account, which the previous "
                           "revision cannot hold; remove them (`integrations remove`) before downgrading")
    with op.batch_alter_table("mixpanel_integrations") as batch:
        for name in reversed(_NEW):
            batch.drop_column(name)
        batch.alter_column("encrypted_mixpanel_project_token", existing_type=sa.Text(), nullable=False)
