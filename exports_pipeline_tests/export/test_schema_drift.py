"""Deployed tables differ from the registry: exports write the columns the table has.

Three deployments, each a copy of the module's seeded table: one that has not run Langfuse migration
0042 (no `ingestion_*` columns), one with columns a later migration might add (types the registry never
uses), and tables that lack a column needed to select rows, which must be refused before anything is
written. Every file is read back with the manifest's column list and compared with ClickHouse's native
values.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from exports_pipeline.errors import DeploymentFault
from exports_pipeline.events.columns import EXPORT_COLUMNS
from exports_pipeline.sinks.object_storage.export import export_window
from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.export.readback import clickhouse_rows, decompress, read_file
from exports_pipeline_tests.export.test_blob_export import WINDOW, integration, local_store, request
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START, MIGRATION_0042_COLUMNS, copy_events_table

FORMATS = ("csv", "json", "jsonl", "parquet")
H = "cityHash64(span_id)"
# Columns a later migration might add: every type family the rendering rules name, NULLs and hard values.
EXTRA = {
    "x_enum": ("Enum8('on, (1)' = 1, 'off' = 2) AFTER span_id", f"if({H} % 2 = 0, 'on, (1)', 'off')"),
    "x_map": ("Map(String, UInt64)",
              f"mapFromArrays(if({H} % 5 = 0, [], ['bytes', 'max']), "
              f"if({H} % 5 = 0, [], [event_bytes, toUInt64(18446744073709551615)]))"),
    "x_arr": ("Array(Nullable(String))",
              f"if({H} % 3 = 0, [], [name, NULL, '', concat('a,\"b\"', char(13), char(10), 'c')])"),
    "x_ts": ("DateTime64(3)", "toDateTime64(start_time, 3)"),
    "x_dt": ("Nullable(DateTime)", f"if({H} % 4 = 0, NULL, toDateTime(start_time))"),
    "x_dec": ("Decimal(38, 10)",
              f"toDecimal128(concat(if({H} % 2 = 0, '-', ''), toString({H} % 100000000000000000), '.', "
              f"leftPad(toString(intDiv({H}, 7) % 10000000000), 10, '0')), 10)"),
    "x_lc": ("LowCardinality(Nullable(String))", f"if({H} % 3 = 0, NULL, ['', 'b', 'c'][{H} % 3 + 1])"),
    "x_bool": ("Bool", f"{H} % 2 = 0"),
    "x_uuid": ("UUID", f"generateUUIDv4({H})"),
    "x_ip": ("IPv4", f"toIPv4(toUInt32({H} % 4294967296))"),
    "x_i128": ("Int128", f"toInt128({H}) * -1000000000000"),
    "x_tuple": ("Tuple(label String, at DateTime64(3), ids Array(UUID))",
                f"(name, toDateTime64(start_time, 3), [generateUUIDv4({H} + 1)])"),
    "x_json": ("JSON", f"CAST(concat('{{\"k\": ', toString({H} % 100), ', \"s\": \"', trace_id, '\"}}'), 'JSON')"),
    "x_alias": ("String ALIAS upper(trace_id)", None),
}


def _database(seeded) -> str:
    return seeded.events_table.split(".")[0]


@pytest.fixture(scope="module")
def pre_0042(seeded):
    """A deployment that has not run migration 0042."""
    return copy_events_table(seeded, f"{_database(seeded)}.pre_0042", drop=MIGRATION_0042_COLUMNS)


@pytest.fixture(scope="module")
def later(seeded):
    """A deployment with columns of a migration the registry does not know yet."""
    return copy_events_table(seeded, f"{_database(seeded)}.later",
                             add=tuple(f"`{n}` {d}" for n, (d, _) in EXTRA.items()),
                             fill={n: e for n, (_, e) in EXTRA.items() if e})


def export_and_read_back(ch, tmp_path, compression: str, **kw):
    result = export_window(ch, local_store(tmp_path),
                           integration(str(tmp_path), file_types=FORMATS, compression=compression), request(), **kw)
    columns = result.manifest["columns"]
    want = clickhouse_rows(ch, "proj-1", DAY_START, DAY_END, columns)
    assert result.rows == len(want) > 1000
    for fmt in FORMATS:
        files = [f for f in result.files if f.format == fmt]
        got = [row for f in files for row in read_file((tmp_path / f.obj.key).read_bytes(), fmt, f.compression,
                                                      columns)]
        assert len(got) == len(want), fmt
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"{fmt} row {i} ({w['span_id']}) differs"
    return result


# Small sub-ranges: several engine queries per file, and the CSV header is ours, not ClickHouse's.
SUBRANGE = 1 << 20


def test_a_table_without_migration_0042_exports_every_format_and_says_what_it_lacks(pre_0042, tmp_path):
    """Was: UNKNOWN_IDENTIFIER on the first query, retried as transient, forever."""
    result = export_and_read_back(pre_0042, tmp_path, "zstd", subrange_bytes=SUBRANGE)
    manifest = result.manifest
    assert manifest["missing_columns"] == list(MIGRATION_0042_COLUMNS)
    assert manifest["columns"] == [{"name": c.name, "type": c.ch_type} for c in EXPORT_COLUMNS
                                   if c.name not in MIGRATION_0042_COLUMNS]
    assert manifest["schema_version"] == 2
    on_disk = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert on_disk["missing_columns"] == manifest["missing_columns"] and on_disk["columns"] == manifest["columns"]


def test_columns_a_later_migration_adds_are_exported_in_table_order_in_every_format(later, tmp_path):
    """Was: dropped silently. Unknown types render by the README's rules, checked value by value."""
    result = export_and_read_back(later, tmp_path, "gzip", subrange_bytes=SUBRANGE)
    columns = result.manifest["columns"]
    names = [c["name"] for c in columns]
    registry = [c.name for c in EXPORT_COLUMNS]
    # table order: x_enum was added AFTER span_id, the others at the end, the alias included
    assert names == [*registry[:3], "x_enum", *registry[3:], *[n for n in EXTRA if n != "x_enum"]]
    types = {c["name"]: c["type"] for c in columns}
    assert types["x_enum"] == "Enum8('on, (1)' = 1, 'off' = 2)" and types["x_ts"] == "DateTime64(3)"
    assert result.manifest["missing_columns"] == []

    # Text formats: timestamps of any precision as ISO UTC with microseconds, nested ones too.
    jsonl = next(f for f in result.files if f.format == "jsonl")
    line = decompress((tmp_path / jsonl.obj.key).read_bytes(), jsonl.compression).split(b"\n", 1)[0].decode()
    first = json.loads(line)
    micro = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    assert micro.match(first["x_ts"]) and micro.match(first["x_tuple"]["at"]), first
    assert first["x_dt"] is None or micro.match(first["x_dt"])
    assert re.search(r'"x_dec":-?\d+\.\d{1,10}[,}]', line)  # a JSON number, exact digits (compared above)
    csv = next(f for f in result.files if f.format == "csv")
    header = decompress((tmp_path / csv.obj.key).read_bytes(), csv.compression).split(b"\r\n", 1)[0]
    assert header.decode().split(",") == [f'"{n}"' for n in names]  # one field per column, tuples included


def test_parquet_gets_native_types_where_it_has_them_and_text_where_it_does_not(later, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    result = export_window(later, local_store(tmp_path), integration(str(tmp_path), file_types=("parquet",)),
                           request())
    schema = pq.read_schema(tmp_path / result.files[0].obj.key)
    assert schema.field("x_ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("x_dt").type == pa.timestamp("us", tz="UTC")
    assert schema.field("x_dec").type == pa.decimal128(38, 10)
    assert schema.field("x_bool").type == pa.bool_()
    assert pa.types.is_map(schema.field("x_map").type)
    assert schema.field("x_arr").type == pa.list_(pa.string())
    for text in ("x_enum", "x_uuid", "x_ip", "x_i128", "x_json", "x_lc"):
        assert schema.field(text).type == pa.string(), text
    assert schema.field("x_tuple").type.field("ids").type.value_type == pa.string()  # UUIDs inside, as text


@pytest.mark.parametrize(
    "ddl",
    [
        # no start_time: the window filter cannot be applied
        "(project_id String, trace_id String, span_id String, event_ts DateTime64(6), is_deleted UInt8) "
        "ENGINE = ReplacingMergeTree(event_ts, is_deleted) ORDER BY (project_id, span_id)",
        # no project_id: a window could hold every project
        "(trace_id String, span_id String, start_time DateTime64(6), event_ts DateTime64(6), is_deleted UInt8) "
        "ENGINE = ReplacingMergeTree(event_ts, is_deleted) ORDER BY (span_id, start_time)",
        # no such table at all
        None,
    ],
    ids=["no-start_time", "no-project_id", "no-table"],
)
def test_a_table_without_a_row_selection_column_is_a_deployment_fault_and_nothing_is_written(
        seeded, tmp_path, ddl, state_database_url):
    table = f"{_database(seeded)}.bad_{uuid.uuid4().hex[:8]}"
    if ddl:
        with chdb_client(seeded.url.removeprefix("chdb://")) as client:
            client.command(f"CREATE TABLE {table} {ddl}")
    state = StateStore(database_url=state_database_url)
    out = tmp_path / "bucket"
    out.mkdir()
    with pytest.raises(DeploymentFault) as caught:
        export_window(ClickHouseResource(url=seeded.url, events_table=table), local_store(out),
                      integration(str(out), file_types=FORMATS), request(), state=state)
    assert caught.value.setting == "EXPORTS_EVENTS_TABLE"
    assert table in str(caught.value)
    if ddl:
        lacking = "start_time" if "start_time" not in ddl else "project_id"
        assert re.search(rf"no column .*\b{lacking}\b", str(caught.value))
    assert [os.path.join(d, n) for d, ds, fs in os.walk(out) for n in fs + ds] == []
    assert state.list_event_log("proj-1", "blob_storage_export_daily", f"{WINDOW.start:%Y-%m-%d}|proj-1") == []


def test_over_http_with_the_table_named_without_its_database(pre_0042, chdb_http, tmp_path):
    """The columns are read through the server's own parameter binding, in the URL's database."""
    database, table = pre_0042.events_table.split(".")
    ch = ClickHouseResource(url=f"http://default:pw@127.0.0.1:{chdb_http.port}/{database}?compress=false",
                            events_table=table)
    result = export_window(ch, local_store(tmp_path), integration(str(tmp_path), file_types=("csv",)), request())
    assert result.manifest["missing_columns"] == list(MIGRATION_0042_COLUMNS)
    want = clickhouse_rows(pre_0042, "proj-1", DAY_START, DAY_END, result.manifest["columns"])
    (f,) = result.files
    assert read_file((tmp_path / f.obj.key).read_bytes(), "csv", "none", result.manifest["columns"]) == want
    with pytest.raises(DeploymentFault, match="no_such_table"):
        export_window(ClickHouseResource(url=ch.url, events_table="no_such_table"), local_store(tmp_path),
                      integration(str(tmp_path)), request())
