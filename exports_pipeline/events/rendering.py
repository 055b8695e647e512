"""How a column of any ClickHouse type is selected so that every format renders it by the README's
"Rendering" rules, with the work done in ClickHouse (no Python ever touches a row).

The registry's own types need only the shared format settings (`queries.TEXT_SETTINGS` /
`PARQUET_SETTINGS`) plus, in CSV, maps and arrays as JSON text, and a registry column is selected
exactly as before. Columns a later Langfuse migration adds may have any type, so the rules are stated
per type, applied to the type the deployed table reports, and reach inside maps, arrays and tuples:

- DateTime, DateTime64 of a precision other than 6: CAST to `DateTime64(6, 'UTC')`, so text formats
  print ISO-8601 UTC with microseconds and Parquet gets microsecond timestamps. (DateTime64(6) in any
  time zone already prints in UTC: `date_time_output_format = 'iso'` converts, Parquet stores UTC.)
- CSV: Map, Array, Tuple, Nested and JSON values are JSON text (`toJSONString`), one field each (CSV
  would otherwise split a tuple into one field per element).
- Parquet has no type for UUID, Enum, IPv4/IPv6, 128/256-bit integers, JSON, Variant and Dynamic (it
  writes raw bytes or numbers): they are CAST to String, the text the JSON formats print.
  FixedString is written as a string by `output_format_parquet_fixed_string_as_fixed_byte_array = 0`.

Everything else (String, Bool, Decimal, (U)Int8..64, Float, Date, LowCardinality, Nullable) is written
natively by every format; NULL stays NULL.
"""

from __future__ import annotations

import re

from clickhouse_connect.driver.binding import quote_identifier

from exports_pipeline.events.columns import base_type, datetime_precision, split_args

TIMESTAMP = "DateTime64(6, 'UTC')"
CSV_AS_JSON = frozenset({"Map", "Array", "Tuple", "Nested", "JSON", "Object"})
PARQUET_AS_TEXT = frozenset({"UUID", "IPv4", "IPv6", "Enum", "Enum8", "Enum16", "Int128", "UInt128", "Int256",
                             "UInt256", "JSON", "Object", "Variant", "Dynamic"})
_TUPLE_ELEMENT = re.compile(r"^(`(?:[^`\\]|\\.)*`|[A-Za-z_][A-Za-z0-9_]*)\s+(\S.*)$", re.S)


def type_name(ch_type: str) -> str:
    """`Map(String, UInt64)` -> `Map`; `JSON(max_dynamic_paths=8)` -> `JSON`; `UUID` -> `UUID`."""
    return ch_type.strip().split("(", 1)[0].strip()


def _inner(ch_type: str) -> str:
    t = ch_type.strip()
    return t[t.index("(") + 1 : -1]


def _rewrite(ch_type: str, fmt_name: str) -> str | None:
    """The type to CAST a value of `ch_type` to for `fmt_name`, or None when it is written as it is."""
    name = type_name(ch_type)
    if name in ("Nullable", "LowCardinality", "Array"):
        inner = _rewrite(_inner(ch_type), fmt_name)
        return None if inner is None else f"{name}({inner})"
    if name == "Map":
        key, value = split_args(_inner(ch_type))
        new_key, new_value = _rewrite(key, fmt_name), _rewrite(value, fmt_name)
        if new_key is None and new_value is None:
            return None
        return f"Map({new_key or key}, {new_value or value})"
    if name == "Tuple":
        elements = split_args(_inner(ch_type))
        rewritten = [_rewrite_tuple_element(e, fmt_name) for e in elements]
        if all(r is None for r in rewritten):
            return None
        return "Tuple(" + ", ".join(r or e for r, e in zip(rewritten, elements, strict=True)) + ")"
    if name == "DateTime" or (name == "DateTime64" and datetime_precision(ch_type) != 6):
        return TIMESTAMP
    if fmt_name == "parquet" and name in PARQUET_AS_TEXT:
        return "String"
    return None


def _rewrite_tuple_element(element: str, fmt_name: str) -> str | None:
    m = _TUPLE_ELEMENT.match(element)
    if m is None:  # an unnamed element: just a type
        return _rewrite(element, fmt_name)
    new = _rewrite(m.group(2), fmt_name)
    return None if new is None else f"{m.group(1)} {new}"


def select_expression(name: str, ch_type: str, fmt_name: str) -> str:
    """The select-list item that writes column `name` of type `ch_type` in format `fmt_name`."""
    return rendered(quote_identifier(name), ch_type, fmt_name, name)


def rendered(expression: str, ch_type: str, fmt_name: str, alias: str) -> str:
    """A select item `expression` (of type `ch_type`) as format `fmt_name` writes it, named `alias`: the one
    place the README's rendering rules become SQL, for table columns and computed ones (batch export rows)."""
    name = quote_identifier(alias)
    target = _rewrite(ch_type, fmt_name)
    expr = expression if target is None else f"CAST({expression} AS {target})"
    if fmt_name == "csv" and type_name(base_type(ch_type)) in CSV_AS_JSON:
        expr = f"toJSONString({expr})"
    return name if expr == name else f"{expr} AS {name}"
