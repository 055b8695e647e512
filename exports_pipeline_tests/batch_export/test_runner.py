"""The runner end to end on a local destination: every format x compression read back and compared with
ClickHouse, the limit and its honest truncation record, another project's rows never, cutoff, step retry."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from exports_pipeline.batch_export.request import stored_query
from exports_pipeline.batch_export.runner import run_batch_export
from exports_pipeline.state.models import BATCH_EXPORT_ENTITY
from exports_pipeline_tests.batch_export.bx import local_env, read_export, reference_rows

GEN_PROD = ('[{"column":"type","type":"stringOptions","operator":"any of","value":["GENERATION"]},'
            '{"column":"totalCost","type":"number","operator":">","value":0}]')


@pytest.fixture
def env(seeded, tmp_path):
    with local_env(seeded, tmp_path) as env:
        yield env


@pytest.mark.parametrize(("fmt", "compression"), [
    ("csv", "none"), ("csv", "gzip"), ("csv", "zstd"), ("json", "none"), ("json", "gzip"), ("json", "zstd"),
    ("jsonl", "none"), ("jsonl", "gzip"), ("jsonl", "zstd"), ("parquet", "none"),
])
def test_each_format_and_compression_reads_back_as_clickhouse_has_it(env, fmt, compression):
    export_id = env.submit(format=fmt, compression=compression, filter=GEN_PROD)
    outcome = env.run(export_id)
    export = outcome.export
    assert export.status == "COMPLETED", export.log
    query = stored_query(export)
    expected = reference_rows(env.clickhouse, query)
    assert len(expected) > 100
    path = env.root / export.object_key
    got = read_export(path.read_bytes(), fmt, compression, list(query.columns))
    assert got == expected
    assert (export.rows_written, export.rows_matched, export.truncated) == (len(expected), len(expected), False)
    assert export.bytes == path.stat().st_size and export.object_uri == path.as_uri()
    assert export.url == str(path) and export.expires_at > export.finished_at
    assert {r["type"] for r in got} == {"GENERATION"} and all(r["totalCost"] > 0 for r in got)
    starts = [r["startTime"] for r in got]
    assert starts == sorted(starts, reverse=True), "newest first unless --order-by says otherwise"
    logged = env.state.list_event_log(export.project_id, BATCH_EXPORT_ENTITY, export.id)
    assert [(e.bucket_name, e.bucket_path) for e in logged] == [(str(env.root), export.object_key)]
    assert export.project_id in export.object_key and export.id in export.object_key
    meta = outcome.metadata()
    assert meta["uri"] == export.object_uri and meta["rows"] == len(expected) and meta["bytes"] == export.bytes
    assert meta["link"] == export.url and meta["seconds"] > 0 and meta["rows_per_second"] > 0


def test_limit_cuts_honestly_and_columns_and_order_hold(env):
    export_id = env.submit(format="jsonl", limit=25, columns="id,totalCost,startTime", order_by="totalCost:desc")
    export = env.run(export_id).export
    assert export.status == "COMPLETED"
    rows = read_export((env.root / export.object_key).read_bytes(), "jsonl", "none", ["id", "totalCost", "startTime"])
    assert len(rows) == 25 == export.rows_written
    assert export.truncated and export.rows_matched > 25
    assert f"limited to 25 of {export.rows_matched:,} matching rows" in export.message
    costs = [r["totalCost"] for r in rows]
    assert costs == sorted(costs, reverse=True)
    assert rows == reference_rows(env.clickhouse, stored_query(export))


def test_another_projects_rows_never_and_cutoff_holds(env):
    export_id = env.submit(project_id="proj-2", format="csv", search="proj-1", search_types=["id", "content"])
    export = env.run(export_id).export
    rows = read_export((env.root / export.object_key).read_bytes(), "csv", "none", list(stored_query(export).columns))
    ids = {r["id"] for r in rows}
    own = {r["id"] for r in env.clickhouse.query_dicts(
        f"SELECT span_id AS id FROM {env.clickhouse.events_table} WHERE project_id = 'proj-1'")}
    assert not ids & own
    everything = env.run(env.submit(project_id="proj-2", format="jsonl")).export
    cutoff = stored_query(everything).cutoff
    assert everything.rows_written == env.clickhouse.query(
        f"SELECT count() FROM {env.clickhouse.events_table} FINAL WHERE project_id = 'proj-2' AND is_deleted = 0 "
        "AND start_time < {c:DateTime64(6, 'UTC')}", {"c": cutoff})[0][0]


def test_a_retry_of_the_same_run_carries_on_with_the_row(env):
    export_id = env.submit(format="csv", limit=10)
    env.state.claim_batch_export(export_id, "run-7")  # attempt 1 claimed it, then died
    with pytest.raises(Exception, match="being run by run run-7"):
        env.run(export_id, run_id="run-other")
    done = env.run(export_id, run_id="run-7").export
    assert done.status == "COMPLETED" and done.run_id == "run-7" and done.rows_written == 10
    again = run_batch_export(export_id, clickhouse=env.clickhouse, object_store=env.object_store, state=env.state,
                             settings=env.settings, run_id="run-7").export
    assert again.status == "COMPLETED" and again.finished_at == done.finished_at, "a finished export is not redone"


@pytest.mark.parametrize(("fmt", "compression"), [("csv", "gzip"), ("jsonl", "none"), ("parquet", "none")])
def test_over_clickhouse_http_the_same_file(seeded, chdb_http, tmp_path, fmt, compression):
    from exports_pipeline_tests.defs.harness import over_http

    with local_env(over_http(seeded, chdb_http), tmp_path) as env:
        export = env.run(env.submit(format=fmt, compression=compression, filter=GEN_PROD, limit=200)).export
        assert export.status == "COMPLETED"
        query = stored_query(export)
        got = read_export((env.root / export.object_key).read_bytes(), fmt, compression, list(query.columns))
        assert got == reference_rows(seeded, query) and len(got) == 200


@pytest.mark.parametrize(("fmt", "compression", "order_by", "limit"), [
    ("csv", "none", None, 1_500_000), ("jsonl", "gzip", "startTime:asc", 1_500_000), ("json", "none", None, 700),
    ("parquet", "none", None, 1_500_000), ("parquet", "none", "startTime:asc", 700),
])
def test_a_sliced_export_is_the_single_query_export_row_for_row(env, fmt, compression, order_by, limit):
    """Tiny slices (a few KB each) against the one query: same rows, same order, same cut."""
    from exports_pipeline.batch_export.slices import plan_slices

    fields = dict(format=fmt, compression=compression, order_by=order_by, limit=limit)
    whole = env.run(env.submit(**fields)).export
    sliced = env.run(env.submit(**fields), slice_bytes=64 << 10).export
    assert (whole.status, sliced.status) == ("COMPLETED", "COMPLETED"), (whole.log, sliced.log)
    query = stored_query(sliced)
    plan = plan_slices(env.clickhouse, query, {}, 64 << 10)
    assert plan is not None and len(plan.slices) > 5, "the small slice size splits the export"
    columns = list(query.columns)
    raw_sliced, raw_whole = ((env.root / e.object_key).read_bytes() for e in (sliced, whole))
    if compression == "none" and fmt != "parquet":
        assert raw_sliced == raw_whole, "the same bytes"
    if fmt == "parquet":  # written from the slices' Arrow blocks: ClickHouse's schema and page codec
        ours, theirs = (pq.ParquetFile(io.BytesIO(raw)) for raw in (raw_sliced, raw_whole))
        assert ours.schema_arrow == theirs.schema_arrow
        assert ours.metadata.row_group(0).column(0).compression == theirs.metadata.row_group(0).column(0).compression
    got = read_export((env.root / sliced.object_key).read_bytes(), fmt, compression, columns)
    want = read_export((env.root / whole.object_key).read_bytes(), fmt, compression, columns)
    assert got == want == reference_rows(env.clickhouse, query)
    assert (sliced.rows_written, sliced.rows_matched, sliced.truncated) == (
        whole.rows_written, whole.rows_matched, whole.truncated)
    assert sliced.truncated == (limit == 700)
