"""Select-list rendering by ClickHouse type (pure Python; the engine-side proof is export/test_schema_drift.py)."""

from __future__ import annotations

import pytest

from exports_pipeline.events.columns import EXPORT_COLUMNS, is_array, is_map
from exports_pipeline.events.queries import export_select_list
from exports_pipeline.events.rendering import select_expression


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_registry_columns_select_exactly_as_before_schema_drift(fmt):
    """Today's files stay byte-identical: the registry's columns are named as they are, except maps and
    arrays as JSON text in CSV (the rule before per-type rendering existed)."""
    before = ", ".join(f"toJSONString(`{c.name}`) AS `{c.name}`" if fmt == "csv" and (is_map(c.ch_type) or is_array(c.ch_type))
                       else f"`{c.name}`" for c in EXPORT_COLUMNS)
    assert export_select_list(fmt, EXPORT_COLUMNS) == before


@pytest.mark.parametrize(
    ("ch_type", "fmt", "expected"),
    [
        ("DateTime64(3)", "jsonl", "CAST(`c` AS DateTime64(6, 'UTC')) AS `c`"),
        ("Nullable(DateTime('Europe/Berlin'))", "parquet", "CAST(`c` AS Nullable(DateTime64(6, 'UTC'))) AS `c`"),
        ("DateTime64(6, 'Asia/Tokyo')", "csv", "`c`"),  # ISO output and Parquet are UTC already
        ("Array(DateTime64(3))", "csv", "toJSONString(CAST(`c` AS Array(DateTime64(6, 'UTC')))) AS `c`"),
        ("Map(String, UUID)", "parquet", "CAST(`c` AS Map(String, String)) AS `c`"),
        ("Map(String, UUID)", "json", "`c`"),
        ("Map(LowCardinality(String), Decimal(18, 12))", "parquet", "`c`"),
        ("Tuple(a String, `b c` Enum8('x, (y)' = 1))", "parquet", "CAST(`c` AS Tuple(a String, `b c` String)) AS `c`"),
        ("Tuple(UInt8, DateTime)", "csv", "toJSONString(CAST(`c` AS Tuple(UInt8, DateTime64(6, 'UTC')))) AS `c`"),
        ("Enum8('a' = 1, 'b' = 2)", "parquet", "CAST(`c` AS String) AS `c`"),
        ("Enum8('a' = 1, 'b' = 2)", "csv", "`c`"),
        ("LowCardinality(Nullable(String))", "parquet", "`c`"),
        ("Nullable(IPv6)", "parquet", "CAST(`c` AS Nullable(String)) AS `c`"),
        ("Int128", "parquet", "CAST(`c` AS String) AS `c`"),
        ("UInt64", "parquet", "`c`"),
        ("JSON", "csv", "toJSONString(`c`) AS `c`"),
        ("JSON", "parquet", "CAST(`c` AS String) AS `c`"),
        ("JSON", "jsonl", "`c`"),
        ("Bool", "csv", "`c`"),
        ("Decimal(38, 10)", "parquet", "`c`"),
    ],
)
def test_unknown_types_render_by_the_rules(ch_type, fmt, expected):
    assert select_expression("c", ch_type, fmt) == expected


def test_column_names_are_quoted_as_identifiers():
    assert select_expression("we`ird", "String", "csv") == "`we\\`ird`"
    assert select_expression("n.x", "Array(String)", "csv") == "toJSONString(`n.x`) AS `n.x`"
