"""Read exported files back into one canonical Python shape, and read ClickHouse into the same shape.

The reference comes from ClickHouse's native protocol (typed values through clickhouse-connect), not
from any text format the exporter uses, so a rendering bug cannot hide by being on both sides.
Canonical values: timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, decimals as normalized Decimal,
maps as dicts, arrays as lists, NULL as None.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import zstandard

from exports_pipeline.events.columns import (
    EXPORT_COLUMNS,
    is_array,
    is_bool,
    is_datetime,
    is_decimal,
    is_integer,
    is_map,
)

TYPES = {c.name: c.ch_type for c in EXPORT_COLUMNS}
NAMES = [c.name for c in EXPORT_COLUMNS]


def _ts(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dec(value) -> Decimal | None:
    return None if value is None else Decimal(str(value)).normalize()


def canonical(name: str, value):
    ch_type = TYPES[name]
    if value is None:
        return None
    if is_datetime(ch_type):
        return _ts(value)
    if is_map(ch_type):
        if isinstance(value, list):  # Parquet maps come back as (key, value) pairs
            value = dict(value)
        inner_dec = "Decimal" in ch_type
        return {k: (_dec(v) if inner_dec else v) for k, v in sorted(value.items())}
    if is_array(ch_type):
        return list(value)
    if is_decimal(ch_type):
        return _dec(value)
    if is_bool(ch_type):
        return value if isinstance(value, bool) else {"true": True, "false": False}[value]
    return value


def canonical_row(row: dict) -> dict:
    return {name: canonical(name, row[name]) for name in NAMES}


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def read_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line, parse_float=Decimal) for line in data.decode().splitlines() if line]


def read_json(data: bytes) -> list[dict]:
    return json.loads(data, parse_float=Decimal)


def read_csv(data: bytes) -> list[dict]:
    """RFC 4180 via Arrow: an unquoted empty field is NULL, a quoted one is the empty string."""
    header = [name.strip('"') for name in data.split(b"\r\n", 1)[0].decode().split(",")]
    assert header == NAMES, "the CSV header names every column, in order"
    table = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header}, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False, null_values=[""]),
    )
    out = []
    for row in table.to_pylist():
        parsed = {}
        for name, value in row.items():
            ch_type = TYPES[name]
            if value is not None and (is_map(ch_type) or is_array(ch_type)):
                value = json.loads(value, parse_float=Decimal)
            elif value is not None and is_integer(ch_type):
                value = int(value)
            parsed[name] = value  # strings, decimals, timestamps, bools: canonical() converts the text
        out.append(parsed)
    return out


def read_parquet(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


READERS = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet}


def read_file(data: bytes, fmt: str, compression: str) -> list[dict]:
    return [canonical_row(r) for r in READERS[fmt](decompress(data, compression))]


def clickhouse_rows(clickhouse, project_id: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """The window's latest versions (FINAL, not deleted) in the exporter's order, natively typed."""
    from exports_pipeline.events.queries import SORT_KEY, WINDOW_FILTER, qualified_table

    cols = ", ".join(f"`{n}`" for n in NAMES)
    sql = f"SELECT {cols} FROM {qualified_table(clickhouse.events_table)} FINAL WHERE {WINDOW_FILTER} ORDER BY {SORT_KEY}"
    rows = clickhouse.query_dicts(sql, {"project_id": project_id, "start": start, "end": end})
    return [canonical_row(r) for r in rows]
