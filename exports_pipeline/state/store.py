"""The pipeline's own database as a Dagster resource.

The resource holds nothing but the URL: the engine is cached per URL and process (Dagster re-creates
resources per run and per op), and the schema is migrated on first use, so a fresh SQLite file or an
empty PostgreSQL database needs no separate setup step. Methods take and return frozen dataclasses from
`state.models`; secrets go in and come out encrypted (callers use `crypto.SecretBox`).
"""

from __future__ import annotations

import dagster as dg

from exports_pipeline.state.batch_exports import BatchExportsMixin
from exports_pipeline.state.cursors import CursorsMixin
from exports_pipeline.state.engine import dispose_engine
from exports_pipeline.state.event_log import EventLogMixin
from exports_pipeline.state.integrations import IntegrationsMixin
from exports_pipeline.state.migrate import forget, upgrade


class StateStore(IntegrationsMixin, EventLogMixin, CursorsMixin, BatchExportsMixin, dg.ConfigurableResource):
    """Integrations, event log, sync cursors and batch exports (SQLite file or PostgreSQL URL)."""

    database_url: str

    def migrate(self) -> str:
        """Apply pending migrations now (otherwise done lazily); returns the head revision."""
        return upgrade(self.database_url)

    def dispose(self) -> None:
        """Close this URL's pooled connections in this process; the next call reconnects."""
        dispose_engine(self.database_url)
        forget(self.database_url)
