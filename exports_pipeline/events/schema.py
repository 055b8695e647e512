"""The events table as deployed: the columns a run exports, and the expected ones it lacks.

Deployed Langfuse versions differ: a deployment that has not run migration 0042 has no `ingestion_*`
columns, and later migrations add columns the registry does not know. Selecting the registry's columns
would fail on the first (UNKNOWN_IDENTIFIER, again on every retry) and silently drop the second. So a
run reads the table's columns once, at its start, exports exactly those in table order (rendered by
type, `events/rendering.py`) and records them, and the registry columns the table lacks, in the
manifest. Only a column that selecting the rows needs is an error, a `DeploymentFault` raised before
anything is written: the operator's to fix (wrong `EXPORTS_EVENTS_TABLE`, or not Langfuse's table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exports_pipeline.errors import DeploymentFault
from exports_pipeline.events.columns import EXPORT_COLUMN_NAMES, Column
from exports_pipeline.events.ddl import split_table_name
from exports_pipeline.events.queries import table_columns_sql

#: What selecting a window's rows needs: `WINDOW_FILTER` (project_id, start_time, is_deleted), the
#: manifest's and the late-rows sensor's `max(event_ts)` (also the ReplacingMergeTree version FINAL
#: keeps), and the deterministic order `SORT_KEY` (trace_id, span_id besides the filter columns).
ROW_SELECTION_COLUMNS = ("project_id", "start_time", "is_deleted", "event_ts", "trace_id", "span_id")

_KINDS = {"": "plain", "DEFAULT": "default", "MATERIALIZED": "materialized", "ALIAS": "alias"}


@dataclass(frozen=True)
class ExportSchema:
    """The columns one run writes (the table's, in table order) and the registry columns the table lacks."""

    table: str
    columns: tuple[Column, ...]
    missing: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def manifest_columns(self) -> list[dict[str, str]]:
        """The manifest's `columns`: name and ClickHouse type of every column written, in file order."""
        return [{"name": c.name, "type": c.ch_type} for c in self.columns]


def read_export_schema(clickhouse, tags: Mapping[str, Any] | None = None) -> ExportSchema:
    """The configured events table's columns (one `system.columns` query): every column a query can
    select is exported, stored, DEFAULT, MATERIALIZED (left out of `SELECT *`, so named) and ALIAS alike;
    EPHEMERAL columns hold nothing and are skipped. Raises DeploymentFault when the table does not exist
    or lacks a row-selection column."""
    table = clickhouse.events_table
    database, name = split_table_name(table)
    params = {"table": name, **({"database": database} if database else {})}
    rows = clickhouse.query(table_columns_sql(database), params, tags=tags)
    columns = tuple(Column(col, ch_type, _KINDS[kind], expression if kind else "")
                    for col, ch_type, kind, expression in rows if kind in _KINDS)
    if not rows:
        raise DeploymentFault(f"events table {table} does not exist in ClickHouse (or has no columns); "
                              "set EXPORTS_EVENTS_TABLE to Langfuse's events_full table",
                              setting="EXPORTS_EVENTS_TABLE")
    present = {c.name for c in columns}
    lacking = [c for c in ROW_SELECTION_COLUMNS if c not in present]
    if lacking:
        raise DeploymentFault(f"events table {table} has no column {', '.join(lacking)}, which exports need to "
                              "select a window's rows (filter, FINAL, order); nothing was exported. Point "
                              "EXPORTS_EVENTS_TABLE at Langfuse's events_full table", setting="EXPORTS_EVENTS_TABLE")
    missing = tuple(n for n in EXPORT_COLUMN_NAMES if n not in present)
    return ExportSchema(table=table, columns=columns, missing=missing)
