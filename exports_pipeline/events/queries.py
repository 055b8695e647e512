"""SQL over the events table. Every value is a server-side parameter; identifiers are validated.

Window reads use `FINAL`, so each span appears once, in its latest version, with deleted rows gone,
even while ReplacingMergeTree versions are unmerged. They order by the table's sorting key, so the
output is deterministic (a re-run writes identical bytes) and ClickHouse reads in order instead of
sorting the window in memory.
"""

from __future__ import annotations

from exports_pipeline.events.columns import EXPORT_COLUMNS, is_array, is_map
from exports_pipeline.events.ddl import qualified_name

# Half-open window on start_time, bound as parameters; DateTime64 parameters are read as UTC.
WINDOW_FILTER = (
    "project_id = {project_id:String} "
    "AND start_time >= {start:DateTime64(6, 'UTC')} AND start_time < {end:DateTime64(6, 'UTC')} "
    "AND is_deleted = 0"
)
SORT_KEY = "project_id, toStartOfMinute(start_time), xxHash32(trace_id), span_id, start_time"

# Rendering settings shared by every export (README "Rendering").
TEXT_SETTINGS = {
    "date_time_output_format": "iso",
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_escape_forward_slashes": 0,
    "output_format_csv_crlf_end_of_line": 1,
    "format_csv_null_representation": "",
}
PARQUET_SETTINGS = {
    "output_format_parquet_row_group_size": 100_000,
    "output_format_parquet_compression_method": "zstd",
    "output_format_parquet_string_as_string": 1,
}


def qualified_table(name: str) -> str:
    return qualified_name(name)


def rendered(expression: str, ch_type: str, fmt_name: str, alias: str) -> str:
    """One select item as format `fmt_name` writes it: CSV carries maps and arrays as JSON text (README
    "Rendering"); every other format takes the value as it is."""
    if fmt_name == "csv" and (is_map(ch_type) or is_array(ch_type)):
        return f"toJSONString({expression}) AS `{alias}`"
    return expression if expression == f"`{alias}`" else f"{expression} AS `{alias}`"


def export_select_list(fmt_name: str) -> str:
    """The columns as each format writes them."""
    return ", ".join(rendered(f"`{col.name}`", col.ch_type, fmt_name, col.name) for col in EXPORT_COLUMNS)


def window_export_sql(table: str, fmt_name: str) -> str:
    return (
        f"SELECT {export_select_list(fmt_name)} FROM {qualified_table(table)} FINAL "
        f"WHERE {WINDOW_FILTER} ORDER BY {SORT_KEY}"
    )


def window_probe_sql(table: str) -> str:
    """Stored rows (all versions) and their I/O text size in a window, from small columns only and
    without FINAL: an estimate to size sub-ranges, not a count."""
    return (
        "SELECT count() AS rows, sum(input_length + output_length) AS io_chars "
        f"FROM {qualified_table(table)} WHERE {WINDOW_FILTER}"
    )


# Start of the window of each frequency containing start_time, computed in UTC (weeks start on Monday),
# exactly as `export.windows.window_floor` computes it in Python.
WINDOW_START_SQL = {
    "hourly": "toStartOfHour(start_time, 'UTC')",
    "daily": "toStartOfDay(start_time, 'UTC')",
    "weekly": "toDateTime(toMonday(start_time, 'UTC'), 'UTC')",
}


def window_states_sql(table: str, frequency: str) -> str:
    """Per window of `frequency` inside `[start, end)` of one project: the latest versions' `count()` and
    `max(event_ts)` (what a manifest records as `source.row_count` / `source.max_event_ts`), in one FINAL
    pass grouped by window start (as Unix seconds, so no driver time zone handling is involved). Windows
    without rows are absent from the result. The filter is the export's own `WINDOW_FILTER`, so a row on a
    boundary counts for the window that starts there, as in the export."""
    try:
        bucket = WINDOW_START_SQL[frequency]
    except KeyError:
        raise ValueError(f"unknown frequency {frequency!r}; expected one of {sorted(WINDOW_START_SQL)}") from None
    return (
        f"SELECT toUnixTimestamp({bucket}) AS window_start, count() AS rows, max(event_ts) AS max_event_ts "
        f"FROM {qualified_table(table)} FINAL WHERE {WINDOW_FILTER} "
        "GROUP BY window_start ORDER BY window_start"
    )


def first_event_sql(table: str) -> str:
    """The project's earliest start_time (latest versions, not deleted), or NULL-equivalent when empty."""
    return (
        f"SELECT count() AS rows, min(start_time) AS first FROM {qualified_table(table)} FINAL "
        "WHERE project_id = {project_id:String} AND is_deleted = 0"
    )


def source_profile_sql(table: str) -> str:
    """Per project and UTC day: rows, distinct traces, bytes, first and last start_time (latest versions)."""
    return f"""
        SELECT project_id, toDate(start_time) AS day, count() AS rows, uniqExact(trace_id) AS traces,
               sum(byteSize(*)) AS bytes, min(start_time) AS min_start_time, max(start_time) AS max_start_time
        FROM {qualified_table(table)} FINAL
        WHERE is_deleted = 0
        GROUP BY project_id, day
        ORDER BY project_id, day
    """
