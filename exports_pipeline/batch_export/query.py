"""A batch export request as bound ClickHouse SQL: Langfuse's `BatchExportEventsRow`, filtered and ordered.

The file's columns are Langfuse's events batch export row (`worker/src/features/database-read-stream/
types.ts`), with its names and in its order; what each one holds:

| column | ClickHouse (`events_full` as `e`) | notes |
|---|---|---|
| id, traceId | span_id, trace_id | |
| traceName | trace_name, else the root span's name | NULL when neither is set (Langfuse: null) |
| type, name, environment, version, level | as stored | |
| startTime, endTime, completionStartTime | as stored (DateTime64(6) UTC) | end/completion may be NULL |
| userId, sessionId, statusMessage, release | user_id, session_id, status_message, release | '' when unset |
| promptName, promptId, promptVersion | prompt_* | promptVersion NULL when unset |
| modelId, providedModelName, modelParameters | model_id, provided_model_name, model_parameters | parameters: the stored JSON text |
| usageDetails, costDetails | usage_details, cost_details | maps; costs exact Decimal(18, 12) |
| totalCost | cost_details['total'] | NULL without a `total` key (the table's alias says 0; the filter says NULL) |
| input, output | as stored | raw text, never re-encoded |
| metadata | metadata_names -> metadata_values | a map; a repeated name keeps its first value, as filters read it |
| latencyMs, timeToFirstTokenMs | date_diff('millisecond', start, end / completion start) | NULL without end / completion start |
| tags | tags | array |
| parentObservationId | parent_span_id | NULL for a root span |

Scores and comments, which Langfuse appends, are not in this project's data and not in the file.
Rendering per format is the object-storage export's (`events.rendering.rendered` and the TEXT/PARQUET
settings the caller passes): ISO-8601 UTC timestamps, maps and arrays as JSON text in CSV and native in
Parquet, NULL apart from ''.

Rows: `FINAL` (latest version, deleted rows gone), `project_id` bound and outside every user expression,
`start_time` before the request's cutoff, the filter and search, ordered, limited. Ordering by `startTime`
reads the table in its sorting-key order (the key starts with `toStartOfMinute(start_time)` after the
fixed project), so ClickHouse only sorts within one minute; any other order is a full sort that spills to
disk (`FULL_SORT_SETTINGS`) instead of holding the result in memory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from exports_pipeline.batch_export.filters import (
    LATENCY_MS_SQL,
    PARENT_ID_SQL,
    TOTAL_COST_SQL,
    TRACE_NAME_SQL,
    TTFT_MS_SQL,
    Condition,
    filter_sql,
    parse_filter,
    search_sql,
    validate_search,
)
from exports_pipeline.errors import ConfigError
from exports_pipeline.events.queries import qualified_table
from exports_pipeline.events.rendering import rendered
from exports_pipeline.formats import FORMATS
from exports_pipeline.resources.clickhouse import settings_clause

QUERY_VERSION = 1

#: Deduplicated metadata: the first value of each name (what `indexOf` in a metadata filter reads).
METADATA_SQL = ("mapFromArrays("
                "arrayFilter((n, i) -> indexOf(e.metadata_names, n) = i, e.metadata_names, "
                "arrayEnumerate(e.metadata_names)), "
                "arrayFilter((v, i) -> indexOf(e.metadata_names, e.metadata_names[i]) = i, e.metadata_values, "
                "arrayEnumerate(e.metadata_names)))")

_DEC = "Decimal(18, 12)"
#: (file column, expression, ClickHouse type of the expression), in Langfuse's order.
_ROW: tuple[tuple[str, str, str], ...] = (
    ("id", "e.span_id", "String"),
    ("traceId", "e.trace_id", "String"),
    ("traceName", TRACE_NAME_SQL, "Nullable(String)"),
    ("type", "e.type", "LowCardinality(String)"),
    ("name", "e.name", "String"),
    ("startTime", "e.start_time", "DateTime64(6)"),
    ("endTime", "e.end_time", "Nullable(DateTime64(6))"),
    ("completionStartTime", "e.completion_start_time", "Nullable(DateTime64(6))"),
    ("environment", "e.environment", "LowCardinality(String)"),
    ("version", "e.version", "String"),
    ("userId", "e.user_id", "String"),
    ("sessionId", "e.session_id", "String"),
    ("level", "e.level", "LowCardinality(String)"),
    ("statusMessage", "e.status_message", "String"),
    ("promptName", "e.prompt_name", "String"),
    ("promptId", "e.prompt_id", "String"),
    ("promptVersion", "e.prompt_version", "Nullable(UInt16)"),
    ("modelId", "e.model_id", "String"),
    ("providedModelName", "e.provided_model_name", "String"),
    ("modelParameters", "e.model_parameters", "String"),
    ("usageDetails", "e.usage_details", "Map(LowCardinality(String), UInt64)"),
    ("costDetails", "e.cost_details", f"Map(LowCardinality(String), {_DEC})"),
    ("totalCost", TOTAL_COST_SQL, f"Nullable({_DEC})"),
    ("input", "e.input", "String"),
    ("output", "e.output", "String"),
    ("metadata", METADATA_SQL, "Map(String, String)"),
    ("latencyMs", LATENCY_MS_SQL, "Nullable(Int64)"),
    ("timeToFirstTokenMs", TTFT_MS_SQL, "Nullable(Int64)"),
    ("tags", "e.tags", "Array(String)"),
    ("release", "e.release", "String"),
    ("parentObservationId", PARENT_ID_SQL, "Nullable(String)"),
)
_EXPRESSION = {name: (sql, ch_type) for name, sql, ch_type in _ROW}

BATCH_EXPORT_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _ROW)
DEFAULT_ORDER = ("startTime", "desc")
DIRECTIONS = ("asc", "desc")

#: Read-in-order (the startTime path, which then sorts one minute at a time) is on by default in
#: ClickHouse and stated here so it stays so.
SORT_SETTINGS: dict[str, Any] = {"optimize_read_in_order": 1}
#: Every export, whatever its order: keep the engine's working set per block, not per result (issue 8:
#: peak RSS of a 4x export within 20% of a day's). The default 65,409-row block of these wide rows (inputs
#: and outputs of KBs) is ~100 MB per block in flight across FINAL's merge, the per-minute sort and the
#: writer; 8,192 rows bounds that. Buffering before the read-in-order merge (on by default) holds chunks
#: of every stream ahead of the merge and, measured, only costs: off, the same files come out faster.
#: Measured natively (INTO OUTFILE, Parquet, chDB 26.9, 2 cores at load 3-5, 505k-row day vs 2.02M-row
#: 4 days): defaults 1,078 -> 1,429 MiB (+32.6%), 6.6 / 33.0 s; max_block_size 8192 alone 868 -> 1,090
#: MiB (+25.5%), 9.5 / 30.2 s; both settings 899 -> 1,086 MiB (+20.8%), 4.5 / 16.0 s. Neither a smaller
#: `preferred_block_size_bytes` (256 KiB), max_threads 1 nor serial Parquet encoding lowered the growth.
#: `bench.batch_export --reps 1` (load 1.0-3.5), day -> 4 days, ours: CSV 790 -> 997 MiB (+26.2%), JSONL
#: 818 -> 993 (+21.4%), Parquet 884 -> 1,124 (+27.0%); before: 1,240 -> 1,546 (+24.7%), 1,224 -> 1,540
#: (+25.8%), 1,148 -> 1,481 (+29%). So ~450 MiB less at every size and b/a 1.00 / 0.83 / 1.04 (was 0.91
#: / 0.61 / 1.15), but the ~200 MiB that still grows does not follow the block size (1,024-8,192 rows
#: leave the 4-day peak at ~900 MiB natively) nor the engine's tracked memory or mark cache (< 100 MB at
#: the end of either run): it is outside what a query setting bounds. Time slices (`slices.py`) bound it.
STREAM_SETTINGS: dict[str, Any] = {"max_block_size": 8192, "read_in_order_use_buffering": 0}
#: Any other order is a full sort, bounded by disk instead of memory: spill sorted runs beyond 64 MiB and
#: merge them in small blocks (`STREAM_SETTINGS`' 8,192 rows). Measured on chDB 26.9 (one seeded day,
#: 423,897 rows, 200 inputs of 1.2 MB, 480 MB of CSV, ordered by name, `max_memory_usage` 1.3 GiB): no
#: spill and a 256 MiB or 16 MiB spill threshold alone all fail with MEMORY_LIMIT_EXCEEDED in the sort
#: (its merge holds one default-sized block per run); with these and 8,192-row blocks it completes
#: (5-9 s, peak RSS 1,465-1,483 MiB vs 2,057 MiB unlimited), as does the startTime path under the same limit.
FULL_SORT_SETTINGS: dict[str, Any] = {
    "max_bytes_before_external_sort": 64 << 20,
    "prefer_external_sort_block_bytes": 4 << 20,
}


def parse_columns(text: str | list[str] | None) -> list[str]:
    """The chosen subset in the order given (`a,b` or a list); None or empty: every column."""
    if text is None:
        return list(BATCH_EXPORT_COLUMNS)
    if isinstance(text, str):
        names = [n.strip() for n in text.split(",")] if text.strip() else []
    elif isinstance(text, list | tuple) and all(isinstance(n, str) for n in text):
        names = [n.strip() for n in text]
    else:
        raise ConfigError("columns must be a comma-separated list of column names", field="columns")
    if not names:
        return list(BATCH_EXPORT_COLUMNS)
    for name in names:
        if not name:
            raise ConfigError("columns has an empty name (two commas in a row?)", field="columns")
        if name not in _EXPRESSION:
            raise ConfigError(f"unknown column {name!r}; columns are {', '.join(BATCH_EXPORT_COLUMNS)}",
                              field="columns")
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate:
        raise ConfigError(f"column {duplicate!r} is named twice", field="columns")
    return names


def parse_order_by(text: str | None) -> tuple[str, str]:
    """`COLUMN[:asc|desc]` over the file's columns (no direction: ascending, as in SQL);
    ("startTime", "desc") when not given, as Langfuse exports."""
    if text is None:
        return DEFAULT_ORDER
    if not isinstance(text, str):
        raise ConfigError("order-by must be text like startTime:desc", field="order_by")
    if not text.strip():
        return DEFAULT_ORDER
    column, _, direction = text.strip().partition(":")
    column, direction = column.strip(), direction.strip().lower() or "asc"
    if column not in _EXPRESSION:
        raise ConfigError(f"cannot order by {column!r}; order by one of {', '.join(BATCH_EXPORT_COLUMNS)}",
                          field="order_by")
    if direction not in DIRECTIONS:
        raise ConfigError(f"order direction {direction!r} must be asc or desc", field="order_by")
    return column, direction


@dataclass(frozen=True)
class BatchQuery:
    """Everything the file needs, validated; `to_json` is what `batch_exports.query` stores."""

    project_id: str
    cutoff: dt.datetime
    conditions: list[Condition] = field(default_factory=list)
    search: str | None = None
    search_types: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=lambda: list(BATCH_EXPORT_COLUMNS))
    order_by: str = DEFAULT_ORDER[0]
    direction: str = DEFAULT_ORDER[1]
    limit: int = 1_500_000

    def __post_init__(self) -> None:
        if not isinstance(self.project_id, str) or not self.project_id:
            raise ConfigError("project id must be a non-empty string", field="project")
        if not isinstance(self.cutoff, dt.datetime) or self.cutoff.tzinfo is None:
            raise ConfigError("cutoff must be a timezone-aware datetime", field="cutoff")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigError(f"limit must be a positive whole number, got {self.limit!r}", field="limit")
        parse_columns(self.columns)
        if self.order_by not in _EXPRESSION or self.direction not in DIRECTIONS:
            raise ConfigError(f"invalid order {self.order_by!r} {self.direction!r}", field="order_by")
        validate_search(self.search, self.search_types if self.search else None)

    @classmethod
    def build(cls, project_id: str, cutoff: dt.datetime, *, filter: str | list | None = None,
              search: str | None = None, search_types: list[str] | None = None,
              columns: str | list[str] | None = None, order_by: str | None = None,
              limit: int = 1_500_000) -> BatchQuery:
        """Validate the request's raw parts (as the CLI or a config has them) into a query."""
        query, types = validate_search(search, search_types)
        column, direction = parse_order_by(order_by)
        return cls(project_id, cutoff.astimezone(dt.UTC), parse_filter(filter), query, types,
                   parse_columns(columns), column, direction, limit)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": QUERY_VERSION,
            "project_id": self.project_id,
            "cutoff": self.cutoff.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "filter": [c.to_json() for c in self.conditions],
            "search": self.search,
            "search_types": list(self.search_types),
            "columns": list(self.columns),
            "order_by": self.order_by,
            "direction": self.direction,
            "limit": self.limit,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchQuery:
        """Re-validates everything: a stored query is trusted no more than a typed one."""
        if not isinstance(d, dict) or d.get("version") != QUERY_VERSION:
            raise ConfigError("stored batch export query has an unknown shape", field="query")
        try:
            cutoff = dt.datetime.fromisoformat(d["cutoff"])
            return cls.build(d["project_id"], cutoff, filter=d.get("filter"), search=d.get("search"),
                             search_types=d.get("search_types") or None, columns=d.get("columns"),
                             order_by=f"{d['order_by']}:{d['direction']}", limit=d["limit"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"stored batch export query is incomplete: {exc!r}", field="query") from None


def _where(q: BatchQuery) -> tuple[str, dict[str, Any]]:
    """project and cutoff first and outside any user expression; each user expression parenthesised."""
    params: dict[str, Any] = {"project_id": q.project_id, "cutoff": q.cutoff}
    parts = ["e.project_id = {project_id:String}", "e.start_time < {cutoff:DateTime64(6, 'UTC')}",
             "e.is_deleted = 0"]
    fsql, fparams = filter_sql(q.conditions)
    if fsql:
        parts.append(f"({fsql})")
        params.update(fparams)
    ssql, sparams = search_sql(q.search, q.search_types)
    if ssql:
        parts.append(ssql)
        params.update(sparams)
    return " AND ".join(parts), params


def _order(q: BatchQuery) -> str:
    d = q.direction.upper()
    tiebreak = f"e.span_id {d}, e.trace_id {d}"
    if q.order_by == "startTime":
        # the sorting key's own prefix first: ClickHouse reads in order and finishes sorting per minute
        return f"toStartOfMinute(e.start_time) {d}, e.start_time {d}, {tiebreak}"
    sql, _ = _EXPRESSION[q.order_by]
    return f"{sql} {d} NULLS LAST, e.start_time {d}, {tiebreak}"


@dataclass(frozen=True)
class TimeSlice:
    """`[start, end)` of start_time (None: open on that side) and the rows the file takes from it: one
    bounded query of a startTime-ordered export (`batch_export/slices.py`)."""

    start: dt.datetime | None
    end: dt.datetime | None
    rows: int


def _slice_where(start: dt.datetime | None, end: dt.datetime | None) -> tuple[str, dict[str, Any]]:
    parts, params = [], {}
    if start is not None:
        parts.append("e.start_time >= {slice_start:DateTime64(6, 'UTC')}")
        params["slice_start"] = start
    if end is not None:
        parts.append("e.start_time < {slice_end:DateTime64(6, 'UTC')}")
        params["slice_end"] = end
    return "".join(f" AND {p}" for p in parts), params


def export_sql(table: str, q: BatchQuery, fmt: str, sort_settings: dict[str, Any] | None = None,
               time_slice: TimeSlice | None = None) -> tuple[str, dict[str, Any]]:
    """The export's SELECT (no FORMAT: the caller adds it and the rendering settings); with `time_slice`,
    only that slice's rows, limited to its `rows`.

    The sort settings sit in the SELECT's own SETTINGS clause, which wins over settings appended after
    it (measured on chDB 26.9), so a tuned threshold goes in `sort_settings`, not in the caller's."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", field="format")
    select = ", ".join(rendered(_EXPRESSION[c][0], _EXPRESSION[c][1], fmt, c) for c in q.columns)
    where, params = _where(q)
    limit = q.limit
    if time_slice is not None:
        swhere, sparams = _slice_where(time_slice.start, time_slice.end)
        where, params, limit = where + swhere, {**params, **sparams}, time_slice.rows
    sql = (f"SELECT {select} FROM {qualified_table(table)} AS e FINAL WHERE {where} "
           f"ORDER BY {_order(q)} LIMIT {{limit:UInt64}}"
           + settings_clause({**SORT_SETTINGS, **STREAM_SETTINGS,
                              **(FULL_SORT_SETTINGS if q.order_by != "startTime" else {}), **(sort_settings or {})}))
    return sql, {**params, "limit": limit}


def slice_probe_sql(table: str, q: BatchQuery, io_columns: list[str]) -> tuple[str, dict[str, Any]]:
    """Stored versions matching the request (no FINAL: cheap, and never narrower than the latest
    versions'), their I/O text size from the length columns the table has, and their start_time span:
    what sizes the slices."""
    where, params = _where(q)
    io = " + ".join(f"e.{c}" for c in io_columns) or "0"
    return (f"SELECT count() AS rows, sum({io}) AS io_chars, min(e.start_time) AS earliest, "
            f"max(e.start_time) AS latest FROM {qualified_table(table)} AS e WHERE {where}", params)


def slice_counts_sql(table: str, q: BatchQuery, bounds: list[dt.datetime]) -> tuple[str, dict[str, Any]]:
    """Matching rows (FINAL) per slice in one pass (`count_sql` split by the ascending inner `bounds`):
    `slice` i holds start_time in [bounds[i-1], bounds[i]), the first and last slices open-ended."""
    where, params = _where(q)
    arms = "".join(f"e.start_time < {{b{i}:DateTime64(6, 'UTC')}}, {i}, " for i in range(len(bounds)))
    slice_sql = f"multiIf({arms}{len(bounds)})" if bounds else "0"
    params.update({f"b{i}": b for i, b in enumerate(bounds)})
    return (f"SELECT {slice_sql} AS slice, count() AS rows FROM {qualified_table(table)} AS e FINAL "
            f"WHERE {where} GROUP BY slice", params)


def count_sql(table: str, q: BatchQuery) -> tuple[str, dict[str, Any]]:
    """How many rows match, without the limit (`rows` in the result): tells a truncated file apart."""
    where, params = _where(q)
    return f"SELECT count() AS rows FROM {qualified_table(table)} AS e FINAL WHERE {where}", params
