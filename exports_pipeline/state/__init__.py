"""The pipeline's own state: integrations, event log, sync cursors and batch exports (SQLAlchemy + Alembic).

Names are resolved lazily so that `state.migrate`, `state.models` and `state.engine` can be used (CLI,
migration subprocesses) without importing Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "BatchExport": "exports_pipeline.state.models",
    "BlobIntegration": "exports_pipeline.state.models",
    "Cursor": "exports_pipeline.state.models",
    "EventLogEntry": "exports_pipeline.state.models",
    "MixpanelIntegration": "exports_pipeline.state.models",
    "PostHogIntegration": "exports_pipeline.state.models",
    "StateStore": "exports_pipeline.state.store",
}

__all__ = [  # spelled out (not derived from _EXPORTS) so linters see the re-exports below
    "BatchExport", "BlobIntegration", "Cursor", "EventLogEntry", "MixpanelIntegration", "PostHogIntegration",
    "StateStore",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:
    from exports_pipeline.state.models import (
        BatchExport,
        BlobIntegration,
        Cursor,
        EventLogEntry,
        MixpanelIntegration,
        PostHogIntegration,
    )
    from exports_pipeline.state.store import StateStore


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
