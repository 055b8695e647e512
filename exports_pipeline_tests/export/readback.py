"""Read exported files back into one canonical Python shape, and read ClickHouse into the same shape.

The reference comes from ClickHouse's native protocol (typed values through clickhouse-connect), not
from any text format the exporter uses, so a rendering bug cannot hide by being on both sides.
Canonical values: timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, decimals as normalized Decimal,
maps as dicts, arrays as lists, NULL as None.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import io
import json
from collections.abc import Callable
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import zstandard

from exports_pipeline.events.columns import (
    EXPORT_COLUMNS,
    array_element_type,
    base_type,
    is_bool,
    is_datetime,
    is_decimal,
    is_integer,
    map_types,
    split_args,
)
from exports_pipeline.events.rendering import CSV_AS_JSON, type_name

#: The columns of a table with the registry's full shape, as a manifest lists them.
REGISTRY_COLUMNS = [{"name": c.name, "type": c.ch_type} for c in EXPORT_COLUMNS]
NAMES = [c["name"] for c in REGISTRY_COLUMNS]
_TEXT_TYPES = {"UUID", "IPv4", "IPv6", "Enum", "Enum8", "Enum16"}


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


def _tuple_elements(ch_type: str) -> list[tuple[str | None, str]]:
    """(name or None, type) of each element of a Tuple type."""
    out = []
    for element in split_args(base_type(ch_type)[len("Tuple("):-1]):
        head, _, rest = element.partition(" ")
        named = rest and "(" not in head
        out.append((head.strip("`"), rest.strip()) if named else (None, element))
    return out


def canonical(ch_type: str, value):
    """One value of `ch_type`, from any reader (ClickHouse's native protocol or a file), in canonical form."""
    return None if value is None else converter(ch_type)(value)


@functools.lru_cache(maxsize=None)
def converter(ch_type: str) -> Callable:
    """The canonical-form function of a (non-NULL) value of `ch_type`, built once per type."""
    name = type_name(base_type(ch_type))
    if is_datetime(ch_type):
        return _ts
    if name == "Map":
        _, value_type = map_types(ch_type)

        def as_map(value):
            if isinstance(value, list):  # Parquet maps come back as (key, value) pairs
                value = dict(value)
            return {k: canonical(value_type, v) for k, v in sorted(value.items())}
        return as_map
    if name == "Array":
        element = array_element_type(ch_type)
        return lambda value: [canonical(element, v) for v in value]
    if name == "Tuple":
        elements = _tuple_elements(ch_type)
        named = all(n is not None for n, _ in elements)

        def as_tuple(value):
            if isinstance(value, dict):  # JSON objects of named tuples; Parquet structs ("1", "2" when unnamed)
                value = list(value.values())
            items = [canonical(t, v) for (_, t), v in zip(elements, value, strict=True)]
            return dict(zip((n for n, _ in elements), items, strict=True)) if named else items
        return as_tuple
    if name == "JSON":
        return lambda value: json.loads(value, parse_float=Decimal) if isinstance(value, str) else value
    if is_decimal(ch_type):
        return _dec
    if is_bool(ch_type):
        return lambda value: value if isinstance(value, bool) else {"true": True, "false": False}[value]
    if is_integer(ch_type):
        return int  # text in CSV, and in Parquet for 128/256-bit integers
    if name in _TEXT_TYPES:
        return str
    return lambda value: value


def canonical_row(row: dict, columns: list[dict] = REGISTRY_COLUMNS) -> dict:
    return {c["name"]: canonical(c["type"], row[c["name"]]) for c in columns}


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


def read_csv(data: bytes, columns: list[dict] = REGISTRY_COLUMNS) -> list[dict]:
    """RFC 4180 via Arrow: an unquoted empty field is NULL, a quoted one is the empty string."""
    header = [name.strip('"') for name in data.split(b"\r\n", 1)[0].decode().split(",")]
    assert header == [c["name"] for c in columns], "the CSV header names every column, in order"
    types = {c["name"]: c["type"] for c in columns}
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
            if value is not None and type_name(base_type(types[name])) in CSV_AS_JSON:
                value = json.loads(value, parse_float=Decimal)
            parsed[name] = value  # scalars stay text: canonical() converts them
        out.append(parsed)
    return out


def read_parquet(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


READERS = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet}


def read_file(data: bytes, fmt: str, compression: str, columns: list[dict] | None = None) -> list[dict]:
    """The file's rows in canonical form; `columns` is the manifest's list (the registry's by default)."""
    columns = columns or REGISTRY_COLUMNS
    raw = decompress(data, compression)
    rows = read_csv(raw, columns) if fmt == "csv" else READERS[fmt](raw)
    assert all(list(r) == [c["name"] for c in columns] for r in rows), "every row has the columns, in order"
    return [canonical_row(r, columns) for r in rows]


def clickhouse_rows(clickhouse, project_id: str, start: dt.datetime, end: dt.datetime,
                    columns: list[dict] | None = None) -> list[dict]:
    """The window's latest versions (FINAL, not deleted) in the exporter's order, natively typed."""
    from exports_pipeline.events.queries import SORT_KEY, WINDOW_FILTER, qualified_table

    columns = columns or REGISTRY_COLUMNS
    cols = ", ".join(f"`{c['name']}`" for c in columns)
    sql = f"SELECT {cols} FROM {qualified_table(clickhouse.events_table)} FINAL WHERE {WINDOW_FILTER} ORDER BY {SORT_KEY}"
    rows = clickhouse.query_dicts(sql, {"project_id": project_id, "start": start, "end": end})
    return [canonical_row(r, columns) for r in rows]
