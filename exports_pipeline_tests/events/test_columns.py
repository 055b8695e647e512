"""The column registry and its type classification (pure Python, no engine)."""

from __future__ import annotations

import pytest

from exports_pipeline.events import columns as C


def names(cols) -> list[str]:
    return [c.name for c in cols]


def test_registry_covers_langfuse_events_full_in_order():
    assert len(C.COLUMNS) == 75
    assert names(C.COLUMNS)[:6] == ["project_id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time"]
    # 0042 ingestion attribution columns close the table
    assert names(C.COLUMNS)[-3:] == ["ingestion_api_key", "ingestion_sdk_name", "ingestion_sdk_version"]
    assert len(set(names(C.COLUMNS))) == len(C.COLUMNS)


def test_kinds():
    kinds = {c.name: c.kind for c in C.COLUMNS}
    assert [n for n, k in kinds.items() if k == "materialized"] == [
        "calculated_input_cost", "calculated_output_cost", "calculated_total_cost", "input_length", "output_length"]
    assert [n for n, k in kinds.items() if k == "alias"] == ["total_cost"]
    assert [n for n, k in kinds.items() if k == "default"] == [
        "environment", "is_app_root", "bookmarked", "public", "created_at", "updated_at",
        "ingestion_api_key", "ingestion_sdk_name", "ingestion_sdk_version"]
    assert C.column("total_cost").expression == "cost_details['total']"
    assert C.column("input_length").expression == "lengthUTF8(input)"
    assert C.column("ingestion_sdk_name").expression == "'unknown'"
    assert C.column("input").codec == "ZSTD(3)" and C.column("output").codec == "ZSTD(3)"
    assert C.column("metadata_values").codec == ""


def test_column_sets():
    assert names(C.STORED_COLUMNS) == [n for n in names(C.COLUMNS) if n != "total_cost"]
    assert "total_cost" not in names(C.INSERT_COLUMNS)
    assert not set(names(C.INSERT_COLUMNS)) & {"calculated_input_cost", "calculated_output_cost",
                                                "calculated_total_cost", "input_length", "output_length"}
    assert len(C.INSERT_COLUMNS) == 75 - 6
    # exports write every stored column plus the ALIAS total_cost, in table order
    assert C.EXPORT_COLUMN_NAMES == tuple(names(C.COLUMNS))
    i = C.EXPORT_COLUMN_NAMES.index
    assert i("calculated_total_cost") < i("total_cost") < i("usage_pricing_tier_id")


def test_column_lookup():
    assert C.column("span_id").ch_type == "String"
    with pytest.raises(KeyError, match="no column 'nope'"):
        C.column("nope")


def test_ddl_line():
    assert C.column("input").ddl() == "`input` String CODEC(ZSTD(3))"
    assert C.column("environment").ddl() == "`environment` LowCardinality(String) DEFAULT 'default'"
    assert C.column("total_cost").ddl() == "`total_cost` Decimal(18, 12) ALIAS cost_details['total']"


def test_column_validation():
    with pytest.raises(ValueError):
        C.Column("x", "String", "materialized")  # needs an expression
    with pytest.raises(ValueError):
        C.Column("x", "String", "plain", "1")
    with pytest.raises(ValueError):
        C.Column("x", "String", "virtual", "1")  # type: ignore[arg-type]


def test_type_classification_over_the_registry():
    assert names(C.columns_where(C.is_map)) == [
        "provided_usage_details", "usage_details", "provided_cost_details", "cost_details", "tool_definitions"]
    assert names(C.columns_where(C.is_array)) == [
        "tags", "tool_calls", "tool_call_names", "metadata_names", "metadata_values",
        "experiment_metadata_names", "experiment_metadata_values",
        "experiment_item_metadata_names", "experiment_item_metadata_values"]
    assert names(C.columns_where(C.is_datetime)) == [
        "start_time", "end_time", "completion_start_time", "experiment_item_version",
        "created_at", "updated_at", "event_ts"]
    assert names(C.columns_where(C.is_nullable)) == [
        "end_time", "completion_start_time", "prompt_version", "usage_pricing_tier_id",
        "usage_pricing_tier_name", "experiment_item_version"]
    assert names(C.columns_where(C.is_decimal)) == [
        "calculated_input_cost", "calculated_output_cost", "calculated_total_cost", "total_cost"]
    assert names(C.columns_where(C.is_bool)) == ["is_app_root", "bookmarked", "public"]
    assert names(C.columns_where(C.is_64bit_integer)) == ["input_length", "output_length", "event_bytes"]
    assert names(C.columns_where(C.is_integer)) == [
        "prompt_version", "input_length", "output_length", "event_bytes", "is_deleted"]
    assert names(C.columns_where(C.is_low_cardinality)) == [
        "type", "environment", "level", "source", "telemetry_sdk_language", "ingestion_sdk_name",
        "ingestion_sdk_version"]
    # every column falls in exactly one rendering family
    families = (C.is_map, C.is_array, C.is_datetime, C.is_decimal, C.is_bool, C.is_integer, C.is_string)
    for col in C.COLUMNS:
        assert sum(f(col.ch_type) for f in families) == 1, col


@pytest.mark.parametrize(
    "t, base, nullable, lc",
    [
        ("Nullable(DateTime64(6))", "DateTime64(6)", True, False),
        ("LowCardinality(Nullable(String))", "String", True, True),
        ("LowCardinality(String)", "String", False, True),
        ("Map(LowCardinality(String), Decimal(18, 12))", "Map(LowCardinality(String), Decimal(18, 12))", False, False),
    ],
)
def test_wrappers(t, base, nullable, lc):
    assert C.base_type(t) == base
    assert C.is_nullable(t) is nullable
    assert C.is_low_cardinality(t) is lc


def test_parametrised_helpers():
    assert C.datetime_precision("Nullable(DateTime64(6))") == 6
    assert C.datetime_precision("DateTime64(3, 'UTC')") == 3
    assert C.datetime_precision("DateTime") == 0
    assert C.decimal_scale("Decimal(18, 12)") == 12
    assert C.decimal_scale("Decimal64(4)") == 4
    assert C.map_types("Map(LowCardinality(String), Decimal(18, 12))") == ("LowCardinality(String)", "Decimal(18, 12)")
    assert C.map_types("Map(String, String)") == ("String", "String")
    assert C.array_element_type("Array(String)") == "String"
    assert C.is_64bit_integer("UInt64") and C.is_64bit_integer("Int64") and not C.is_64bit_integer("UInt16")
    assert C.is_unsigned("UInt8") and not C.is_unsigned("Int8")
    assert not C.is_integer("Bool") and not C.is_integer("Decimal(18, 12)")
    assert C.is_string("FixedString(4)") and not C.is_string("Array(String)")
    with pytest.raises(ValueError):
        C.decimal_scale("String")
    with pytest.raises(ValueError):
        C.map_types("Array(String)")
    with pytest.raises(ValueError):
        C.datetime_precision("UInt64")
