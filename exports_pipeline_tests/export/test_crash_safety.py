"""A re-export of a changed window killed at each of its steps (S3 and local): the window always has either
a manifest that matches every listed file, or no manifest; every object that exists is in event_log; and the
next run ends with the whole window exported and nothing left behind (pending uploads, temp and scratch files,
objects the manifest does not list)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid

import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline.sinks.object_storage.export import entity_type
from exports_pipeline.sinks.object_storage.plugin import export_partition
from exports_pipeline.windows import Window
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.state.models import BlobIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.defs.harness import over_http
from exports_pipeline_tests.export.readback import clickhouse_rows, read_file
from exports_pipeline_tests.seeded_events import DAY_START

KEY = "3e" * 32
WEEK = Window(DAY_START, DAY_START + dt.timedelta(weeks=1))  # Monday 2 Nov 2026: both seeded days
PARTITION = "2026-11-02|proj-1"
FOLDER = "proj-1/events/weekly/2026-11-02T00-00-00Z_2026-11-09T00-00-00Z/"
MANIFEST = FOLDER + "manifest.json"

S3 = "exports_pipeline.resources.object_store.s3:S3ObjectStore"
S3W = "exports_pipeline.resources.object_store.s3_writer:S3Writer"
LOCAL = "exports_pipeline.resources.object_store.local:LocalObjectStore"
LOCALW = "exports_pipeline.resources.object_store.local:LocalWriter"
ENGINE = "exports_pipeline.resources.clickhouse:ClickHouseResource.export_to_file"
MANIFEST_PUT = "exports_pipeline.resources.object_store.base:ObjectStore.put_bytes"
FORGET_ROWS = "exports_pipeline.state.event_log:EventLogMixin.delete_event_log"

# (destination, step, target, nth, when): every step of a re-export, in order.
STEPS = [
    ("s3", "old manifest retracted", f"{S3}.delete_keys", 1, "after"),
    ("s3", "engine wrote a scratch file", ENGINE, 1, "after"),
    ("s3", "mid multipart upload", f"{S3W}._upload_part", 1, "after"),
    ("s3", "first data object committed", f"{S3W}.commit", 1, "after"),
    ("s3", "new manifest written", MANIFEST_PUT, 1, "after"),
    ("s3", "stale objects deleted, rows not", FORGET_ROWS, 1, "before"),
    ("local", "old manifest retracted", f"{LOCAL}.delete_keys", 1, "after"),
    ("local", "engine wrote a scratch file", ENGINE, 1, "after"),
    ("local", "mid file write", f"{LOCALW}.write", 3, "after"),
    ("local", "first data object committed", f"{LOCALW}.commit", 1, "after"),
    ("local", "new manifest written", MANIFEST_PUT, 1, "after"),
    ("local", "stale objects deleted, rows not", FORGET_ROWS, 1, "before"),
]


class Place:
    """The destination as the test sees it, independent of the code under test."""

    def __init__(self, kind: str, root, s3_client=None, bucket: str | None = None) -> None:
        self.kind, self.root, self.s3, self.bucket = kind, root, s3_client, bucket

    def keys(self, *, hidden: bool = True) -> list[str]:
        """Every object; on a local disk every file, unless `hidden=False` leaves out the scratch and
        temporary files a killed writer leaves (not objects: never listed as keys, cleared by the next run)."""
        if self.kind == "s3":
            listed = self.s3.list_objects_v2(Bucket=self.bucket)
            return sorted(o["Key"] for o in listed.get("Contents", []))
        files = [str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()]
        return sorted(f for f in files if hidden or not (f.startswith(".exports-scratch-") or ".tmp-" in f))

    def read(self, key: str) -> bytes | None:
        if self.kind == "s3":
            try:
                return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                return None
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def pending_uploads(self) -> list:
        if self.kind != "s3":
            return []
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])


def manifest_tells_the_truth(place: Place) -> dict | None:
    """The window's manifest, after checking it describes exactly the bytes that are there (or None)."""
    raw = place.read(MANIFEST)
    if raw is None:
        return None
    manifest = json.loads(raw)
    for f in manifest["files"]:
        data = place.read(f["key"])
        assert data is not None, f"the manifest lists {f['key']}, which does not exist"
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"]), \
            f"the manifest does not describe the bytes of {f['key']}"
    return manifest


@pytest.fixture
def world(request, seeded, tmp_path, monkeypatch, moto_endpoint, s3_bucket, s3_client, chdb_http):
    kind = request.param
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("EXPORTS_SCRATCH_DIR", str(scratch))  # this process and the killed one share it
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    if kind == "s3":
        place = Place("s3", None, s3_client, s3_bucket)
        integ = BlobIntegration(project_id="proj-1", type="S3_COMPATIBLE", bucket_name=s3_bucket, prefix="",
                                endpoint=moto_endpoint, force_path_style=True, access_key_id="testing",
                                secret_access_key=SecretBox(KEY).encrypt("testing"), export_frequency="weekly",
                                file_types=("json", "csv"))
    else:
        root = tmp_path / "bucket"
        root.mkdir()
        place = Place("local", root)
        integ = BlobIntegration(project_id="proj-1", type="LOCAL", bucket_name=str(root),
                                export_frequency="weekly", file_types=("json", "csv"))
    state.upsert_blob_integration(integ)
    yield {"kind": kind, "place": place, "state": state, "scratch": scratch, "integration": integ,
           "http": over_http(seeded, chdb_http), "db": f"sqlite:///{tmp_path / 'state.db'}"}
    state.dispose()


def export(seeded, state, run_id: str):
    return export_partition(clickhouse=seeded, object_store=ObjectStoreResource(min_part_size_mb=5,
                            default_part_size_mb=5, backoff_base_seconds=0.01), state=state,
                            box=SecretBox(KEY), frequency="weekly", project_id="proj-1", window=WEEK,
                            partition_key=PARTITION, run_id=run_id)


def change_the_window(seeded) -> None:
    """A late span lands in the window (so the data files change) - one more row of proj-1's week."""
    table = seeded.events_table
    seeded.command(
        f"INSERT INTO {table} SELECT * REPLACE ({{span:String}} AS span_id, now64(6) AS event_ts) FROM {table} "
        "FINAL WHERE project_id = 'proj-1' AND start_time >= {start:DateTime64(6, 'UTC')} LIMIT 1",
        {"span": f"late-{uuid.uuid4().hex}", "start": WEEK.start})


def kill_reexport(world, target: str, nth: int, when: str) -> None:
    http = world["http"]
    config = {"kill": {"target": target, "nth": nth, "when": when}, "clickhouse_url": http.url,
              "events_table": http.events_table, "database_url": world["db"], "key": KEY,
              "frequency": "weekly", "project": "proj-1", "partition": PARTITION,
              "start": WEEK.start.isoformat(), "end": WEEK.end.isoformat()}
    done = subprocess.run([sys.executable, "-m", "exports_pipeline_tests.export.kill_runner", json.dumps(config)],
                          capture_output=True, text=True, timeout=240, env={**os.environ})
    assert done.returncode == -9, f"the step was never reached (exit {done.returncode}): {done.stderr[-2000:]}"


@pytest.mark.parametrize(("world", "step", "target", "nth", "when"), STEPS, indirect=["world"],
                         ids=[f"{d}: {s}" for d, s, *_ in STEPS])
def test_reexport_killed_at_each_step(seeded, world, step, target, nth, when):
    place, state = world["place"], world["state"]
    first = export(seeded, state, "run-1")
    assert manifest_tells_the_truth(place)["source"]["row_count"] == first.result.rows

    change_the_window(seeded)
    state.upsert_blob_integration(BlobIntegration(**{**world["integration"].__dict__,
                                                     "file_types": ("json", "parquet")}))
    kill_reexport(world, target, nth, when)

    # Right after the crash: a manifest that matches every listed file, or none at all.
    manifest_tells_the_truth(place)
    # Every object that exists can be found through event_log (so the next run and
    # `export-objects delete` can clear it).
    logged = {e.bucket_path for e in state.list_event_log("proj-1")}
    assert set(place.keys(hidden=False)) - logged == set(), "objects nobody knows about"

    result = export(seeded, state, "run-3").result
    manifest = manifest_tells_the_truth(place)
    reference = clickhouse_rows(seeded, "proj-1", WEEK.start, WEEK.end)
    assert manifest is not None and manifest["source"]["row_count"] == len(reference) == result.rows
    listed = {f["key"] for f in manifest["files"]}
    assert {f["format"] for f in manifest["files"]} == {"json", "parquet"}
    for f in manifest["files"]:
        assert read_file(place.read(f["key"]), f["format"], "none") == reference
    # Nothing left behind: no unlisted objects, no pending uploads, no temp or scratch files.
    assert set(place.keys()) == listed | {MANIFEST}
    assert place.pending_uploads() == []
    assert os.listdir(world["scratch"]) == []
    assert {e.bucket_path for e in state.list_event_log("proj-1", entity_type("weekly"), PARTITION)} == \
        listed | {MANIFEST}
