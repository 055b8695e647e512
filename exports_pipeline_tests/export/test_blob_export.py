"""One window, every format and compression, read back and compared row by row with ClickHouse FINAL."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from exports_pipeline.errors import ConfigError
from exports_pipeline.events.columns import EXPORT_COLUMNS
from exports_pipeline.sinks.object_storage.export import ExportRequest, entity_type, export_window
from exports_pipeline.windows import Window
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.state.models import BlobIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START
from exports_pipeline_tests.export.readback import clickhouse_rows, read_file

WINDOW = Window(DAY_START, DAY_END)
KEY_PREFIX = "proj-1/events/daily/2026-11-02T00-00-00Z_2026-11-03T00-00-00Z/"


def request(project="proj-1", run="run-1", window=WINDOW) -> ExportRequest:
    return ExportRequest(project, "daily", window, f"{window.start:%Y-%m-%d}|{project}", run)


def integration(out: str = "/unused", **kw) -> BlobIntegration:
    base = {"project_id": "proj-1", "type": "LOCAL", "bucket_name": out, "export_frequency": "daily",
            "file_types": ("jsonl",)}
    return BlobIntegration(**{**base, **kw})


def local_store(path) -> object:
    return ObjectStoreResource().open(Destination(scheme="file", bucket=str(path)))


@pytest.fixture(scope="module")
def reference(seeded):
    return clickhouse_rows(seeded, "proj-1", DAY_START, DAY_END)


def test_reference_window_is_the_hard_data_we_need(reference):
    """Guard for every comparison below: the window really holds the hard cases."""
    texts = [r["output"] for r in reference] + [r["input"] for r in reference]
    assert len(reference) > 1000
    assert any(t and len(t.encode()) > 1_000_000 for t in texts), "a >1 MB input"
    for needle in [",", '"', "\n", "\r\n", "\t", "\\", "🚀", "中文", "é"]:
        assert any(t and needle in t for t in texts), needle
    assert any(r["end_time"] is None for r in reference) and any(r["output"] == "" for r in reference)
    assert all(r["project_id"] == "proj-1" for r in reference)


# Parquet compresses its own pages (zstd); file-level compression applies to the text formats only.
COMBINATIONS = [(f, c) for f in ("csv", "json", "jsonl") for c in ("none", "gzip", "zstd")] + [("parquet", "none")]


@pytest.mark.parametrize(("fmt", "compression"), COMBINATIONS)
def test_every_format_and_compression_reads_back_equal_to_clickhouse(seeded, reference, tmp_path, fmt, compression):
    store = local_store(tmp_path)
    result = export_window(seeded, store, integration(str(tmp_path), file_types=(fmt,), compression=compression),
                           request())
    rows = []
    for f in result.files:
        data = (tmp_path / f.obj.key).read_bytes()
        assert f.obj.size == len(data)
        got = read_file(data, fmt, f.compression)
        assert len(got) == f.rows
        rows.extend(got)
    assert result.rows == len(reference)
    assert len(rows) == len(reference)
    for i, (got, want) in enumerate(zip(rows, reference, strict=True)):
        assert got == want, f"row {i} ({want['span_id']}) differs"


def test_windows_are_half_open_and_never_hold_another_project(seeded, tmp_path):
    """A row at a boundary lands in exactly one window; the next day and the other project never leak."""
    day2 = Window(DAY_END, DAY_END + dt.timedelta(days=1))
    both = []
    for window in (WINDOW, day2):
        out = tmp_path / window.start.strftime("%d")
        out.mkdir()
        result = export_window(seeded, local_store(out), integration(str(out)), request(window=window))
        for f in result.files:
            for row in read_file((out / f.obj.key).read_bytes(), "jsonl", "none"):
                assert row["project_id"] == "proj-1"
                start = dt.datetime.fromisoformat(row["start_time"].replace("Z", "+00:00"))
                assert window.start <= start < window.end
                both.append(row["span_id"])
    assert len(both) == len(set(both))
    total = seeded.query(f"SELECT count() FROM {seeded.events_table} FINAL WHERE project_id = 'proj-1' AND is_deleted = 0")
    assert len(both) == total[0][0]


def test_boundary_row_lands_in_exactly_one_window(seeded, tmp_path):
    """Insert a span exactly at midnight: the window starting there has it, the one ending there does not."""
    seeded.command(
        f"INSERT INTO {seeded.events_table} (project_id, trace_id, span_id, start_time, event_ts, is_deleted) "
        "VALUES ('proj-b', 't-b', 's-boundary', {t:DateTime64(6, 'UTC')}, {t:DateTime64(6, 'UTC')}, 0)",
        {"t": DAY_END},
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = export_window(seeded, local_store(tmp_path / "a"), integration(str(tmp_path / "a"), project_id="proj-b"),
                           request("proj-b"))
    after = export_window(seeded, local_store(tmp_path / "b"), integration(str(tmp_path / "b"), project_id="proj-b"),
                          request("proj-b", window=Window(DAY_END, DAY_END + dt.timedelta(days=1))))
    assert before.rows == 0 and before.files == []
    assert after.rows == 1


def test_manifest_is_complete_and_written_last(seeded, tmp_path):
    result = export_window(seeded, local_store(tmp_path),
                           integration(str(tmp_path), file_types=("csv", "parquet", "jsonl"), compression="gzip"),
                           request())
    manifest_path = tmp_path / KEY_PREFIX / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest == result.manifest
    assert manifest["window"] == {"start": "2026-11-02T00:00:00.000000Z", "end": "2026-11-03T00:00:00.000000Z",
                                  "bounds": "[start, end)", "column": "start_time"}
    assert manifest["frequency"] == "daily" and manifest["project_id"] == "proj-1"
    assert manifest["formats"] == ["csv", "parquet", "jsonl"] and manifest["run_id"] == "run-1"
    assert manifest["schema_version"] == 2
    # the full registry shape: every column written, with its ClickHouse type, none missing
    assert manifest["columns"] == [{"name": c.name, "type": c.ch_type} for c in EXPORT_COLUMNS]
    assert manifest["missing_columns"] == []
    source = seeded.query(f"SELECT count(), max(event_ts) FROM {seeded.events_table} FINAL "
                          "WHERE project_id='proj-1' AND start_time >= '2026-11-02' AND start_time < '2026-11-03' "
                          "AND is_deleted = 0")[0]
    assert manifest["source"]["row_count"] == source[0]
    assert manifest["source"]["max_event_ts"] == source[1].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    import hashlib

    for fmt in ("csv", "parquet", "jsonl"):
        files = [f for f in manifest["files"] if f["format"] == fmt]
        assert sum(f["row_count"] for f in files) == source[0], fmt
    for f in manifest["files"]:
        data = (tmp_path / f["key"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
        assert f["key"].startswith(KEY_PREFIX)
    keys = sorted(f["key"].removeprefix(KEY_PREFIX) for f in manifest["files"])
    assert keys == ["part-00000.csv.gz", "part-00000.jsonl.gz", "part-00000.parquet"]
    content_types = {f["format"]: f["content_type"] for f in manifest["files"]}
    assert content_types == {"csv": "application/gzip", "jsonl": "application/gzip",
                             "parquet": "application/vnd.apache.parquet"}
    # written last: every data file is older than (or as old as) the manifest
    assert all(os.path.getmtime(tmp_path / f["key"]) <= os.path.getmtime(manifest_path) for f in manifest["files"])


def test_empty_window_writes_a_manifest_with_zero_files(seeded, tmp_path):
    empty = Window(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    result = export_window(seeded, local_store(tmp_path), integration(str(tmp_path), file_types=("csv", "parquet")),
                           request(window=empty))
    assert result.files == [] and result.manifest["files"] == [] and result.manifest["source"]["row_count"] == 0
    written = [os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert written == ["proj-1/events/daily/2026-01-01T00-00-00Z_2026-01-02T00-00-00Z/manifest.json"]


def test_rollover_splits_files_at_the_size_limit_and_counts_rows_per_file(seeded, reference, tmp_path):
    integ = integration(str(tmp_path), file_types=("csv", "jsonl", "parquet"), max_file_size_mb=1)
    result = export_window(seeded, local_store(tmp_path), integ, request(), subrange_bytes=1 << 20)
    for fmt in ("csv", "jsonl", "parquet"):
        files = [f for f in result.files if f.format == fmt]
        assert len(files) >= 2, fmt
        assert [f.part for f in files] == list(range(len(files)))
        rows = []
        for f in files:
            got = read_file((tmp_path / f.obj.key).read_bytes(), fmt, "none")
            assert len(got) == f.rows > 0
            rows.extend(got)
        assert rows == reference, fmt


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_rerun_writes_identical_keys_and_content(seeded, tmp_path, compression):
    integ = integration(str(tmp_path), file_types=("csv", "json", "jsonl", "parquet"), compression=compression)
    first = export_window(seeded, local_store(tmp_path), integ, request(run="a"))
    second = export_window(seeded, local_store(tmp_path), integ, request(run="b"))
    assert [(f.obj.key, f.obj.sha256, f.rows) for f in first.files] == \
           [(f.obj.key, f.obj.sha256, f.rows) for f in second.files]
    assert second.deleted_stale == []


def test_rerun_with_fewer_parts_deletes_stale_objects_and_their_event_log_rows(seeded, tmp_path, state_database_url):
    state = StateStore(database_url=state_database_url)
    many = integration(str(tmp_path), file_types=("jsonl",), max_file_size_mb=1)
    first = export_window(seeded, local_store(tmp_path), many, request(run="a"), state=state, subrange_bytes=1 << 20)
    assert len(first.files) >= 2
    logged = state.list_event_log("proj-1", entity_type("daily"), "2026-11-02|proj-1")
    assert sorted(e.bucket_path for e in logged) == sorted([f.obj.key for f in first.files] + [KEY_PREFIX + "manifest.json"])
    assert all(e.bucket_name == str(tmp_path) for e in logged)

    one = integration(str(tmp_path), file_types=("jsonl",))
    second = export_window(seeded, local_store(tmp_path), one, request(run="b"), state=state)
    assert len(second.files) == 1
    assert sorted(second.deleted_stale) == sorted(f.obj.key for f in first.files[1:])
    on_disk = sorted(os.listdir(tmp_path / KEY_PREFIX))
    assert on_disk == ["manifest.json", "part-00000.jsonl"]
    logged = state.list_event_log("proj-1", entity_type("daily"), "2026-11-02|proj-1")
    assert sorted(e.bucket_path for e in logged) == [KEY_PREFIX + "manifest.json", KEY_PREFIX + "part-00000.jsonl"]
    ids_before = {e.bucket_path: e.id for e in logged}
    export_window(seeded, local_store(tmp_path), one, request(run="c"), state=state)
    again = state.list_event_log("proj-1", entity_type("daily"), "2026-11-02|proj-1")
    assert {e.bucket_path: e.id for e in again} == ids_before  # upserted, not duplicated


def test_bad_key_templates_are_refused(seeded, tmp_path):
    for template, needle in [("{prefix}{project_id}/x.{ext}", "part"), ("{prefix}{nope}/{part}.{ext}", "unknown"),
                             ("{project_id}/{window_start}/{part}.{ext}", "{prefix}")]:
        with pytest.raises(ConfigError, match=needle):
            export_window(seeded, local_store(tmp_path), integration(str(tmp_path), key_template=template), request())


def test_custom_template_with_shared_folder_keeps_manifests_apart(seeded, tmp_path):
    template = "{prefix}{project_id}/{frequency}/{window_start}-{format}-{part:03d}.{ext}"
    result = export_window(seeded, local_store(tmp_path), integration(str(tmp_path), key_template=template), request())
    assert result.files[0].obj.key == "proj-1/daily/2026-11-02T00-00-00Z-jsonl-000.jsonl"
    assert result.manifest_uri.endswith("proj-1/daily/2026-11-02T00-00-00Z_2026-11-03T00-00-00Z_manifest.json")


def test_export_holds_exactly_the_latest_undeleted_versions_by_an_independent_dedup(seeded, tmp_path):
    """FINAL + `is_deleted = 0` against argMax over every stored version: same spans, latest outputs."""
    result = export_window(seeded, local_store(tmp_path), integration(str(tmp_path)), request())
    exported = {r["span_id"]: r["output"] for f in result.files
                for r in read_file((tmp_path / f.obj.key).read_bytes(), "jsonl", "none")}
    latest = seeded.query(
        f"SELECT span_id, argMax(output, event_ts), argMax(is_deleted, event_ts) FROM {seeded.events_table} "
        "WHERE project_id = 'proj-1' AND start_time >= '2026-11-02' AND start_time < '2026-11-03' GROUP BY span_id")
    expected = {span: output for span, output, deleted in latest if not deleted}
    raw = seeded.query(f"SELECT count() FROM {seeded.events_table} WHERE project_id = 'proj-1' "
                       "AND start_time >= '2026-11-02' AND start_time < '2026-11-03'")[0][0]
    assert raw > len(expected)  # the window really has unmerged versions and tombstones
    assert any(o.startswith("[v2] ") for o in expected.values())
    assert exported == expected


def test_local_export_leaves_no_scratch_behind_on_success_or_failure(seeded, tmp_path):
    from exports_pipeline.resources.clickhouse import ClickHouseError, ClickHouseResource

    export_window(seeded, local_store(tmp_path), integration(str(tmp_path), file_types=("csv", "parquet")), request())
    everything = [os.path.relpath(os.path.join(d, n), tmp_path) for d, ds, fs in os.walk(tmp_path) for n in fs + ds]
    assert not [p for p in everything if ".exports-scratch-" in p or ".tmp-" in p]

    class Broken(ClickHouseResource):
        def export_to_file(self, sql, fmt, path, parameters=None, **kwargs):
            with open(path, "wb") as fh:
                fh.write(b"half a file")
            raise ClickHouseError("dropped (injected)")

    out = tmp_path / "broken"
    out.mkdir()
    with pytest.raises(ClickHouseError):
        export_window(Broken(url=seeded.url, events_table=seeded.events_table), local_store(out),
                      integration(str(out), file_types=("csv",)), request())
    assert [os.path.join(d, n) for d, ds, fs in os.walk(out) for n in fs + ds] == []
