"""One measurement in this process; prints one JSON line.

    python -m bench.measure --case native|ours_local|boto_upload|ours_s3 --format csv|jsonl|parquet
                            [--window day|quad] [--endpoint http://127.0.0.1:PORT --bucket NAME]

Cases (the issue's letters):

* `native` (a): `ClickHouseResource.export_to_file` of the window, i.e. `SELECT ... INTO OUTFILE ...
  TRUNCATE FORMAT X` on chDB, with exactly the SQL and settings the export uses (CSV for csv,
  JSONEachRow for jsonl, Parquet for parquet). The file stays at `bench/out/native/<window>.<ext>` for (c).
* `ours_local` (b): `export_window` (the asset's code path for one window) with a LOCAL integration of
  that one format, compression none, into a fresh directory.
* `boto_upload` (c): `boto3.client('s3', endpoint_url=...).upload_file(<a's file>, bucket, key)`, boto3
  defaults (TransferConfig: 8 MiB parts, 10 threads).
* `ours_s3` (d): `export_window` with an S3 integration on the moto server; the secret is stored
  encrypted with `SecretBox` and decrypted by `destination_for`, as the asset does.

Timing is wall time of the operation only: imports and one warm-up query (the engine's first start in
the process: loading chDB's library, its global init) come first, for every case alike. Peak RSS is
`ru_maxrss` of this process, so it includes the interpreter, chDB (≈300 MB) and the warm-up.
MB are 10^6 bytes; `peak_rss_mb` is MiB. Objects written to S3 are deleted after timing, so moto (which
holds objects in RAM) does not grow over a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid

# Imported up front for every case, so the peak RSS of every case carries the same libraries.
import boto3
import pyarrow.parquet as pq

from bench.prepare import OUT_DIR, PROJECT, TABLE, WINDOWS, clickhouse, exclusive_run, load_marker
from exports_pipeline.crypto import SecretBox
from exports_pipeline.events.queries import PARQUET_SETTINGS, TEXT_SETTINGS, window_export_sql
from exports_pipeline.events.schema import read_export_schema
from exports_pipeline.sinks.object_storage.export import ExportRequest, destination_for, export_window
from exports_pipeline.formats import get_format
from exports_pipeline.resources.clickhouse import query_tags
from exports_pipeline.resources.object_store import ObjectStoreResource
from exports_pipeline.state.models import BlobIntegration

CASES = ("native", "ours_local", "boto_upload", "ours_s3")
FORMATS = ("csv", "jsonl", "parquet")
ACCESS_KEY = SECRET_KEY = "testing"
NATIVE_DIR = os.path.join(OUT_DIR, "native")
SCRATCH_DIR = os.path.join(OUT_DIR, "scratch")


def native_path(fmt_name: str, window: str) -> str:
    return os.path.join(NATIVE_DIR, f"{window}.{get_format(fmt_name).extension}")


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads (chDB's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def warm_up_engine(ch) -> None:
    """Start the embedded engine once (library load, global init), as a long-lived worker would have."""
    with ch.client() as client:
        client.command(f"SELECT count() FROM {TABLE}")


def _request(window: str) -> ExportRequest:
    return ExportRequest(PROJECT, "daily", WINDOWS[window], f"bench-{window}", f"bench-{uuid.uuid4().hex[:8]}")


def run_native(fmt_name: str, window: str, rows: int) -> dict:
    ch = clickhouse()
    warm_up_engine(ch)
    fmt = get_format(fmt_name)
    w = WINDOWS[window]
    sql = window_export_sql(TABLE, fmt_name, read_export_schema(ch).columns)  # the export's own column list
    settings = TEXT_SETTINGS if fmt.text else PARQUET_SETTINGS
    params = {"project_id": PROJECT, "start": w.start, "end": w.end}
    path = native_path(fmt_name, window)
    os.makedirs(NATIVE_DIR, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    rss0 = peak_rss_mib()
    t0, c0 = time.perf_counter(), cpu_seconds()
    size = ch.export_to_file(sql, fmt.clickhouse_format, path, params, settings=settings,
                             tags=query_tags(sink="bench-native"))
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if not fmt.text:
        rows = pq.read_metadata(path).num_rows
    return {"rows": rows, "bytes": size, "seconds": seconds, "rss_before_mb": rss0, "cpu_s": cpu, "files": 1}


def _ours(fmt_name: str, window: str, integration: BlobIntegration, box: SecretBox | None) -> dict:
    ch = clickhouse()
    warm_up_engine(ch)
    request = _request(window)
    notes: list[str] = []
    rss0 = peak_rss_mib()
    t0, c0 = time.perf_counter(), cpu_seconds()
    store = ObjectStoreResource().open(destination_for(integration, box))
    with store:
        result = export_window(ch, store, integration, request, log=notes.append)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if integration.type == "S3":  # keep moto's memory flat across runs
            store.delete_keys(store.list_keys(f"{PROJECT}/"))
    subranges = None
    for note in notes:  # "<partition>: N rows, ~M MiB, K sub-range(s)"
        if "sub-range" in note:
            subranges = int(note.rsplit(",", 1)[-1].split()[0])
    return {"rows": result.rows, "bytes": result.bytes, "seconds": seconds, "rss_before_mb": rss0, "cpu_s": cpu,
            "files": len(result.files), "subranges": subranges}


def run_ours_local(fmt_name: str, window: str) -> dict:
    os.makedirs(SCRATCH_DIR, exist_ok=True)
    dest = tempfile.mkdtemp(prefix="ours-local-", dir=SCRATCH_DIR)
    try:
        integration = BlobIntegration(project_id=PROJECT, type="LOCAL", bucket_name=dest, export_frequency="daily",
                                      file_types=(fmt_name,), compression="none")
        return _ours(fmt_name, window, integration, None)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run_ours_s3(fmt_name: str, window: str, endpoint: str, bucket: str) -> dict:
    box = SecretBox(os.urandom(32).hex())
    integration = BlobIntegration(project_id=PROJECT, type="S3", bucket_name=bucket, export_frequency="daily",
                                  file_types=(fmt_name,), compression="none", endpoint=endpoint,
                                  force_path_style=True, region="us-east-1", access_key_id=ACCESS_KEY,
                                  secret_access_key=box.encrypt(SECRET_KEY))
    return _ours(fmt_name, window, integration, box)


def run_boto_upload(fmt_name: str, window: str, rows: int, endpoint: str, bucket: str) -> dict:
    path = native_path(fmt_name, window)
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: run the native case for {fmt_name}/{window} first")
    size = os.path.getsize(path)
    key = f"boto/{window}/{uuid.uuid4().hex}.{get_format(fmt_name).extension}"
    if not get_format(fmt_name).text:
        rows = pq.read_metadata(path).num_rows
    rss0 = peak_rss_mib()
    t0, c0 = time.perf_counter(), cpu_seconds()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key=SECRET_KEY)
    s3.upload_file(path, bucket, key)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        raise RuntimeError(f"uploaded {head['ContentLength']} bytes, expected {size}")
    s3.delete_object(Bucket=bucket, Key=key)
    return {"rows": rows, "bytes": size, "seconds": seconds, "rss_before_mb": rss0, "cpu_s": cpu, "files": 1}


def measure(case: str, fmt_name: str, window: str = "day", endpoint: str | None = None,
            bucket: str | None = None) -> dict:
    marker = load_marker()
    if marker is None:
        raise SystemExit("bench data is not prepared: run `python -m bench.prepare` first")
    rows = int(marker["windows"][window]["rows"])
    if case in ("boto_upload", "ours_s3") and not (endpoint and bucket):
        raise SystemExit(f"case {case} needs --endpoint and --bucket")
    if case == "native":
        out = run_native(fmt_name, window, rows)
    elif case == "ours_local":
        out = run_ours_local(fmt_name, window)
    elif case == "ours_s3":
        out = run_ours_s3(fmt_name, window, endpoint, bucket)
    elif case == "boto_upload":
        out = run_boto_upload(fmt_name, window, rows, endpoint, bucket)
    else:
        raise SystemExit(f"unknown case {case!r}; expected one of {CASES}")
    if out["rows"] != rows:
        raise RuntimeError(f"{case}/{fmt_name}/{window}: {out['rows']} rows, the window has {rows}")
    seconds = out["seconds"]
    return {
        "case": case, "format": fmt_name, "window": window, "rows": out["rows"], "bytes": out["bytes"],
        "seconds": round(seconds, 3), "rows_per_s": round(out["rows"] / seconds), "mb_per_s":
        round(out["bytes"] / 1e6 / seconds, 1), "peak_rss_mb": round(peak_rss_mib(), 1),
        "rss_before_mb": round(out["rss_before_mb"], 1), "files": out.get("files"),
        "subranges": out.get("subranges"), "cpu_s": round(out["cpu_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one benchmark measurement, one JSON line")
    parser.add_argument("--case", required=True, choices=CASES)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--window", default="day", choices=sorted(WINDOWS))
    parser.add_argument("--endpoint")
    parser.add_argument("--bucket")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="experiment: gc.freeze() after imports (moves the import-time heap out of the GC's way)")
    args = parser.parse_args(argv)
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
    with exclusive_run(log=lambda m: print(m, file=sys.stderr, flush=True)):
        result = measure(args.case, args.format, args.window, args.endpoint, args.bucket)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
