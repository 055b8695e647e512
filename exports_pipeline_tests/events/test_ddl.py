"""events_full DDL on the real embedded engine (chDB) versus the registry."""

from __future__ import annotations

import uuid

import pytest

from exports_pipeline.events import ddl
from exports_pipeline.events.columns import COLUMNS, EXPORT_COLUMN_NAMES, STORED_COLUMNS


def _columns(client, database: str, table: str):
    return client.query(
        "SELECT name, type, default_kind, default_expression, compression_codec FROM system.columns "
        f"WHERE database = '{database}' AND table = '{table}' ORDER BY position"
    ).result_rows


def test_system_columns_match_registry_exactly(ch_client, ch_database):
    assert ddl.create_events_table(ch_client) == "`events_full`"
    got = _columns(ch_client, ch_database, "events_full")
    want = [(c.name, c.ch_type, c.default_kind, c.expression, f"CODEC({c.codec})" if c.codec else "")
            for c in COLUMNS]
    assert got == want


def test_engine_keys_and_settings(ch_client, ch_database):
    ddl.create_events_table(ch_client)
    engine, engine_full, partition_key, sorting_key, primary_key, sampling_key = ch_client.query(
        "SELECT engine, engine_full, partition_key, sorting_key, primary_key, sampling_key FROM system.tables "
        f"WHERE database = '{ch_database}' AND name = 'events_full'"
    ).result_rows[0]
    assert engine == "ReplacingMergeTree"
    assert engine_full.startswith("ReplacingMergeTree(event_ts, is_deleted) PARTITION BY toYYYYMM(start_time) ")
    assert partition_key == "toYYYYMM(start_time)"
    assert sorting_key == "project_id, toStartOfMinute(start_time), xxHash32(trace_id), span_id, start_time"
    assert primary_key == "project_id, toStartOfMinute(start_time), xxHash32(trace_id)"
    assert sampling_key == "xxHash32(trace_id)"
    for setting in ("index_granularity_bytes = '64Mi'", "merge_max_block_size_bytes = '64Mi'",
                    "enable_block_number_column = 1", "enable_block_offset_column = 1",
                    "prewarm_mark_cache = 1", "prewarm_primary_key_cache = 1"):
        assert setting in engine_full
    # a query-level setting: applied to the CREATE, not stored with the table
    assert "enable_full_text_index" not in engine_full
    assert ddl.REJECTED == {}


def test_skip_indexes(ch_client, ch_database):
    ddl.create_events_table(ch_client)
    got = ch_client.query(
        "SELECT name, type_full, expr, granularity FROM system.data_skipping_indices "
        f"WHERE database = '{ch_database}' AND table = 'events_full'"
    ).result_rows
    assert [r[0] for r in got] == [i[0] for i in ddl.INDEXES]
    by_name = {r[0]: r for r in got}
    assert by_name["idx_span_id"][1:] == ("bloom_filter(0.01)", "span_id", 1)
    assert by_name["idx_updated_at"][1:] == ("minmax", "updated_at", 1)
    assert by_name["idx_fts_input_low"][1].startswith("text(") and by_name["idx_fts_input_low"][2] == "lower(input)"
    assert by_name["idx_ngram_metadata_values"][1:] == (
        "ngrambf_v1(4, 32000, 3, 0)", "arrayStringConcat(metadata_values)", 2)


def test_create_is_idempotent_and_qualified_names(ch_client, ch_database):
    other = f"t_{uuid.uuid4().hex[:12]}"
    ch_client.command(f"CREATE DATABASE {other}")
    try:
        assert ddl.create_events_table(ch_client, f"{other}.ev") == f"`{other}`.`ev`"
        ddl.create_events_table(ch_client, "ev", database=other)  # IF NOT EXISTS: no error
        ddl.create_events_table(ch_client, "ev2")  # the client's own database
        tables = ch_client.query(
            f"SELECT database, name FROM system.tables WHERE database IN ('{other}', '{ch_database}') ORDER BY name"
        ).result_rows
        assert tables == [(other, "ev"), (ch_database, "ev2")]
        # SELECT * leaves MATERIALIZED and ALIAS columns out: exports must name their columns
        star = ch_client.query(f"SELECT * FROM `{other}`.`ev` LIMIT 0").column_names
        assert list(star) == [c.name for c in STORED_COLUMNS if c.kind in ("plain", "default")]
        listed = ch_client.query(
            f"SELECT {', '.join(f'`{n}`' for n in EXPORT_COLUMN_NAMES)} FROM `{other}`.`ev` LIMIT 0").column_names
        assert tuple(listed) == EXPORT_COLUMN_NAMES
    finally:
        ch_client.command(f"DROP DATABASE IF EXISTS {other} SYNC")


def test_create_table_sql_shape():
    sql = ddl.create_table_sql("events_full", "analytics")
    assert sql.startswith("CREATE TABLE IF NOT EXISTS `analytics`.`events_full`\n(")
    assert "ENGINE = ReplacingMergeTree(event_ts, is_deleted)" in sql
    assert "SAMPLE BY xxHash32(trace_id)" in sql
    assert "`input` String CODEC(ZSTD(3))" in sql
    assert "enable_full_text_index = 1" in sql


@pytest.mark.parametrize(
    "bad", ["", "1abc", "events-full", "a b", "x;DROP TABLE y", "a`b", "db.t.x", "é", ".t", "db."])
def test_invalid_names_rejected(bad):
    with pytest.raises(ValueError, match="invalid ClickHouse"):
        ddl.create_table_sql(bad)


def test_invalid_database_and_conflicts():
    with pytest.raises(ValueError, match="database name"):
        ddl.qualified_name("t", "bad-db")
    with pytest.raises(ValueError, match="names database"):
        ddl.qualified_name("a.t", "b")
    assert ddl.qualified_name("a.t", "a") == "`a`.`t`"
    assert ddl.split_table_name("events_full") == (None, "events_full")
