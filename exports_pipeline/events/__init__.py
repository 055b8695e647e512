"""Langfuse's `events_full` table: column registry, DDL and a synthetic data generator.

The generator lives in `exports_pipeline.events.seed` (import `seed`, `SeedStats` ... from there); it is
deliberately not re-exported here, so the package attribute `seed` stays the module, not the function.
"""

from exports_pipeline.events.columns import (
    COLUMN_NAMES,
    COLUMNS,
    EXPORT_COLUMN_NAMES,
    EXPORT_COLUMNS,
    INSERT_COLUMNS,
    STORED_COLUMNS,
    Column,
    column,
)
from exports_pipeline.events.ddl import create_events_table, create_table_sql, qualified_name, split_table_name

__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "EXPORT_COLUMNS",
    "EXPORT_COLUMN_NAMES",
    "INSERT_COLUMNS",
    "STORED_COLUMNS",
    "Column",
    "column",
    "create_events_table",
    "create_table_sql",
    "qualified_name",
    "split_table_name",
]
