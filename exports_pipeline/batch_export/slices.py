"""A startTime-ordered batch export read in time slices, each its own bounded query (issue 8).

A Parquet file does not concatenate, so a sliced Parquet export is written here, from the Arrow blocks
ClickHouse streams for each slice (`write_parquet`), with ClickHouse's own Parquet choices (zstd pages,
strings as strings; row groups of 50,000 rows, not its 100,000, to bound memory): the same columns, types
and values as its Parquet writer.

One query over a large export made ClickHouse's peak memory grow with the export (+21..27% from a
day to 4 days, INTO OUTFILE alike), whatever its block size; the object-storage export never had that,
because it splits a window into sub-ranges sized by a cheap probe. Here the same: a non-FINAL probe of
the matching rows sizes and spans the slices, one FINAL pass counts each slice (it is also the export's
`rows_matched`), and the slices are written in the file's order (newest first for desc) with the rows
each may still add, as the parts of the one file. Any other order is one sort over everything and keeps
one query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from exports_pipeline.batch_export.query import BatchQuery, TimeSlice, slice_counts_sql, slice_probe_sql
from exports_pipeline.events.queries import IO_LENGTH_COLUMNS, PARQUET_SETTINGS
from exports_pipeline.events.schema import read_export_schema
from exports_pipeline.windows import Window, subrange_count

#: Estimated output bytes per slice (the probe's estimate: 700 B a row plus input/output). Every slice is
#: another FINAL pass over its range, so slices are large. `bench.batch_export --reps 1` (load 2.4-4.2),
#: day (one slice) -> 4 days: 512 MiB: CSV 806 -> 840 MiB (+4.3%), JSONL 807 -> 875 (+8.5%), b/a 0.78 /
#: 0.75; 256 MiB (the day in two slices, so its CSV is copied, not moved into place): +3.6% / +9.8%, CSV
#: b/a 0.67. INTO OUTFILE of the one query grows +27% in the same runs.
DEFAULT_SLICE_BYTES = 512 << 20
ROW_OVERHEAD_BYTES = 700  # rendered size of a row without input/output, for the size estimate


@dataclass(frozen=True)
class SlicePlan:
    """`matched`: rows matching (FINAL, no limit); `slices`: the non-empty ones in file order, their
    rows adding up to min(matched, limit)."""

    matched: int
    slices: list[TimeSlice]


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def plan_slices(clickhouse, query: BatchQuery, tags: dict, slice_bytes: int = DEFAULT_SLICE_BYTES
                ) -> SlicePlan | None:
    """The slices of a startTime-ordered export, or None when one query it is (another order, or the
    matching rows fit one slice)."""
    if query.order_by != "startTime":
        return None
    table = clickhouse.events_table
    present = set(read_export_schema(clickhouse, tags=tags).names)
    sql, params = slice_probe_sql(table, query, [c for c in IO_LENGTH_COLUMNS if c in present])
    probe = clickhouse.query_dicts(sql, params, tags=tags)[0]
    estimated = int(probe["rows"]) * ROW_OVERHEAD_BYTES + int(probe["io_chars"] or 0)
    parts = subrange_count(estimated, slice_bytes)
    if not int(probe["rows"]) or parts <= 1:
        return None
    earliest, latest = _utc(probe["earliest"]), _utc(probe["latest"])
    if latest <= earliest:
        return None
    # Inner bounds only: the oldest and newest slices are open-ended, so a row the probe did not see
    # (inserted since) is still in exactly one slice, as it would be in the one query.
    bounds = [w.end for w in Window(earliest, latest + dt.timedelta(microseconds=1)).split(parts)[:-1]]
    sql, params = slice_counts_sql(table, query, bounds)
    found = {int(r["slice"]): int(r["rows"]) for r in clickhouse.query_dicts(sql, params, tags=tags)}
    edges: list[dt.datetime | None] = [None, *bounds, None]
    ranges = [(edges[i], edges[i + 1], found.get(i, 0)) for i in range(len(bounds) + 1)]
    if query.direction == "desc":
        ranges.reverse()
    slices, remaining = [], query.limit
    for start, end, rows in ranges:
        take = min(rows, remaining)
        if take:
            slices.append(TimeSlice(start, end, take))
            remaining -= take
    return SlicePlan(sum(found.values()), slices)


#: Arrow output of the same SELECT as ClickHouse's Parquet output (`events.queries.PARQUET_SETTINGS`).
ARROW_SETTINGS = {"output_format_arrow_string_as_string": 1, "output_format_arrow_fixed_string_as_fixed_byte_array": 0,
                  "output_format_arrow_low_cardinality_as_dictionary": 0}
#: Rows per Arrow block read and per row group written. A row group is held whole (its Arrow block and its
#: encoded pages) while written, so it sets the writer's memory: `python -m bench.batch_export --measure
#: ours --format parquet --window quad` (4 days, 2.0M rows, 512 MiB slices) peaked at 1049/1047 MiB with
#: ClickHouse's 100,000 rows, 1004 with 65,409 (its block size), 1001/972 with 50,000, 1004 with 25,000;
#: the day export (one query, ClickHouse's writer) at 892. Readers see the same columns and values.
PARQUET_ROW_GROUP_ROWS = 50_000
PARQUET_CODEC = PARQUET_SETTINGS["output_format_parquet_compression_method"]


def write_parquet(path: str, slices: Iterable[AbstractContextManager[Iterable[pa.RecordBatch]]]) -> bool:
    """Write the record batches of every slice (each a context manager of a stream, opened in turn) to one
    Parquet file at `path`, a row group per block; False if there was not a single block (nothing written)."""
    writer: pq.ParquetWriter | None = None
    try:
        for opened in slices:
            with opened as batches:
                for batch in batches:
                    if writer is None:  # no Arrow schema in the file, as ClickHouse's: readers take
                        # Parquet's own types (timestamps adjusted to UTC read as UTC, not Etc/UTC)
                        writer = pq.ParquetWriter(path, batch.schema, compression=PARQUET_CODEC, store_schema=False)
                    elif batch.schema != writer.schema:
                        batch = batch.cast(writer.schema)
                    writer.write_batch(batch, row_group_size=PARQUET_ROW_GROUP_ROWS)
    finally:
        if writer is not None:  # a failed export's file is scratch, discarded by the caller
            writer.close()
    return writer is not None
