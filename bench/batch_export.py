"""Batch export speed and memory: ours vs ClickHouse-native `INTO OUTFILE` of the same filtered SQL.

    python -m bench.batch_export [--reps 1] [--formats csv,jsonl,parquet]

The request is the issue's first example filter, as Langfuse's events table sends it: `environment any
of ["production"]` plus `startTime >= day start`, `startTime < day end` over the prepared data
(`bench.prepare`). The seeder picks a trace's environment from (default, production, production,
staging), so about half of the day's rows match; the run counts and prints the fraction.

Per format, each in a fresh process (imports and one warm-up query first, for both cases alike):

* (a) `ClickHouseResource.export_to_file` of `query.export_sql(...)` for that request: the same SELECT,
  parameters and settings the runner builds (rendering settings, sort settings, a `log_comment`) and the
  same ClickHouse format (CSVWithNames / JSONEachRow / Parquet), i.e. chDB's `INTO OUTFILE`;
* (b) the real path: the request stored by `request.submit` in a fresh SQLite state DB, then
  `runner.run_batch_export` (what the `batch_export` job's op calls for `--run`) into a fresh local
  destination: claim, count, event_log, engine write, adopt, link, COMPLETED.

Reported per case: wall seconds of the operation, CPU seconds of the process (all threads, chDB's
included), peak RSS (`ru_maxrss`, so interpreter and chDB included), bytes. b/a is the speed ratio
(seconds of a ÷ seconds of b; both write the same rows); the CPU ratio beside it is CPU-s of a ÷ CPU-s
of b. Then both over the same filter on the 4-day window (≈4x the rows; the deployment's row limit is
raised for the bench so nothing is cut) against the day: the peak RSS growth of (b), with (a)'s beside
it (what the engine alone grows by on that query). Medians over
`--reps`; results also go to `bench/out/batch_export.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.prepare import LOCK_ENV, OUT_DIR, PROJECT, TABLE, WINDOWS, exclusive_run, prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(OUT_DIR, "batch_export.json")
SCRATCH_DIR = os.path.join(OUT_DIR, "scratch")
NATIVE_DIR = os.path.join(OUT_DIR, "bx-native")
FORMATS = ("csv", "jsonl", "parquet")
CASES = ("native", "ours")
LABEL = {"native": "(a) native INTO OUTFILE", "ours": "(b) ours -> local dir"}
TARGET = {"csv": 0.7, "jsonl": 0.7, "parquet": 0.5}
RSS_TOLERANCE = 0.20
ROW_LIMIT = 100_000_000  # the bench's EXPORTS_BATCH_EXPORT_ROW_LIMIT: the 4-day export must not be cut
MEASURE_TIMEOUT = 900


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def request_filter(window: str) -> list[dict]:
    """Langfuse's filter JSON for production rows of the window (its first example's shape)."""
    w = WINDOWS[window]
    return [{"column": "environment", "type": "stringOptions", "operator": "any of", "value": ["production"]},
            {"column": "startTime", "type": "datetime", "operator": ">=", "value": _iso(w.start)},
            {"column": "startTime", "type": "datetime", "operator": "<", "value": _iso(w.end)}]


# --------------------------------------------------------------------------- one measurement (child process)


def _count(window: str) -> dict:
    """Rows of the window, and those the filter matches, through the export's own WHERE (`count_sql`)."""
    from bench.prepare import clickhouse
    from exports_pipeline.batch_export.query import BatchQuery, count_sql

    ch = clickhouse()
    now = dt.datetime.now(dt.UTC)
    out = {}
    for name, flt in (("all", request_filter(window)[1:]), ("matched", request_filter(window))):
        sql, params = count_sql(TABLE, BatchQuery.build(PROJECT, now, filter=flt, limit=ROW_LIMIT))
        out[name] = int(ch.query_dicts(sql, params)[0]["rows"])
    return {"window": window, **out, "fraction": out["matched"] / out["all"]}


def _native(fmt_name: str, window: str) -> dict:
    from bench.measure import cpu_seconds, peak_rss_mib, warm_up_engine
    from bench.prepare import clickhouse
    from exports_pipeline.batch_export.query import BatchQuery, export_sql
    from exports_pipeline.events.queries import PARQUET_SETTINGS, TEXT_SETTINGS
    from exports_pipeline.files import parquet_rows
    from exports_pipeline.formats import get_format
    from exports_pipeline.resources.clickhouse import query_tags

    ch = clickhouse()
    warm_up_engine(ch)
    fmt = get_format(fmt_name)
    query = BatchQuery.build(PROJECT, dt.datetime.now(dt.UTC), filter=request_filter(window), limit=ROW_LIMIT)
    # exactly what runner._write builds: one SETTINGS clause with rendering, sort and the query's tags
    settings = {**(TEXT_SETTINGS if fmt.text else PARQUET_SETTINGS),
                "log_comment": json.dumps(query_tags(sink="bench-native"), sort_keys=True)}
    sql, params = export_sql(TABLE, query, fmt_name, sort_settings=settings)
    ch_format = "CSVWithNames" if fmt_name == "csv" else fmt.clickhouse_format  # as engine_text_files picks
    os.makedirs(NATIVE_DIR, exist_ok=True)
    path = os.path.join(NATIVE_DIR, f"{window}.{fmt.extension}")
    try:
        t0, c0 = time.perf_counter(), cpu_seconds()
        size = ch.export_to_file(sql, ch_format, path, params)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        rows = parquet_rows(path) if not fmt.text else None  # text rows: checked by bytes against (b)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"rows": rows, "bytes": size, "seconds": seconds, "cpu_s": cpu, "peak_rss_mb": peak_rss_mib()}


def _ours(fmt_name: str, window: str) -> dict:
    from bench.measure import cpu_seconds, peak_rss_mib, warm_up_engine
    from bench.prepare import clickhouse
    from exports_pipeline.batch_export.request import BatchRequest, submit
    from exports_pipeline.batch_export.runner import run_batch_export
    from exports_pipeline.resources.object_store.resource import ObjectStoreResource
    from exports_pipeline.settings import BatchExportSettings
    from exports_pipeline.state.store import StateStore

    ch = clickhouse()
    warm_up_engine(ch)
    os.makedirs(SCRATCH_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bx-ours-", dir=SCRATCH_DIR)
    state = StateStore(database_url=f"sqlite:///{work}/state.db")
    try:
        settings = BatchExportSettings(destination=f"file://{work}/files/", row_limit=ROW_LIMIT)
        export = submit(state, BatchRequest(PROJECT, fmt_name, filter=request_filter(window),
                                            name=f"bench-{window}"), settings.row_limit)
        t0, c0 = time.perf_counter(), cpu_seconds()
        outcome = run_batch_export(export.id, clickhouse=ch, object_store=ObjectStoreResource(), state=state,
                                   settings=settings, run_id="bench")
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        e = outcome.export
        if e.status != "COMPLETED" or e.truncated:
            raise RuntimeError(f"batch export ended {e.status}, truncated={e.truncated}: {e.log or e.message}")
        if os.path.getsize(e.url) != e.bytes:
            raise RuntimeError(f"{e.url} holds {os.path.getsize(e.url)} bytes, the row says {e.bytes}")
        return {"rows": e.rows_written, "matched": e.rows_matched, "bytes": e.bytes, "seconds": seconds,
                "cpu_s": cpu, "peak_rss_mb": peak_rss_mib()}
    finally:
        state.dispose()
        shutil.rmtree(work, ignore_errors=True)


def measure_one(case: str, fmt_name: str, window: str) -> dict:
    out = _native(fmt_name, window) if case == "native" else _ours(fmt_name, window)
    return {"case": case, "format": fmt_name, "window": window, **out,
            "seconds": round(out["seconds"], 3), "cpu_s": round(out["cpu_s"], 2),
            "peak_rss_mb": round(out["peak_rss_mb"], 1)}


# ------------------------------------------------------------------------------------------ the parent


def _child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "EXPORTS_SCRATCH_DIR": SCRATCH_DIR, LOCK_ENV: str(os.getpid())}
    os.makedirs(SCRATCH_DIR, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "bench.batch_export", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=MEASURE_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def _median(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for k in ("seconds", "cpu_s", "peak_rss_mb", "bytes"):
        out[k] = statistics.median(r[k] for r in runs)
    out["runs"] = len(runs)
    return out


def one_rows(med: dict, fmt: str, window: str) -> int | None:
    """(a)'s text files are not parsed back; (b)'s row of the same window says how many rows they hold
    (the run checks both files have the same bytes)."""
    return (med.get(("ours", fmt, window)) or {}).get("rows")


def report(counts: dict, med: dict, formats: list[str], out=print) -> dict:
    summary: dict = {"ratios": {}, "rss_4x": {}}
    day = counts["day"]
    out("")
    out(f"filter: environment any of [production], startTime in the window; day window: {day['matched']:,} of "
        f"{day['all']:,} rows match ({day['fraction']:.1%}); 4-day window: {counts['quad']['matched']:,} of "
        f"{counts['quad']['all']:,} ({counts['quad']['fraction']:.1%})")
    out("")
    out(f"{'format':<8} {'case':<25} {'rows':>9} {'MB':>7} {'seconds':>8} {'rows/s':>9} {'cpu s':>7} "
        f"{'peak RSS MiB':>13}")
    for fmt in formats:
        a, b = med.get(("native", fmt, "day")), med.get(("ours", fmt, "day"))
        for case, r in (("native", a), ("ours", b)):
            if r is None:
                out(f"{fmt:<8} {LABEL[case]:<25} (failed)")
                continue
            rows = r["rows"] if r["rows"] is not None else one_rows(med, fmt, "day")
            out(f"{fmt:<8} {LABEL[case]:<25} {rows or 0:>9,} {r['bytes'] / 1e6:>7.0f} {r['seconds']:>8.2f} "
                f"{(rows or 0) / r['seconds']:>9,.0f} {r['cpu_s']:>7.2f} {r['peak_rss_mb']:>13.0f}")
        if a and b:
            ratio, cpu_ratio = a["seconds"] / b["seconds"], a["cpu_s"] / b["cpu_s"]
            ok = ratio >= TARGET[fmt]
            summary["ratios"][fmt] = {"speed_b_over_a": round(ratio, 3), "cpu_a_over_b": round(cpu_ratio, 3),
                                      "target": TARGET[fmt], "pass": ok}
            same = "same bytes" if a["bytes"] == b["bytes"] else f"bytes differ: a {a['bytes']:,} b {b['bytes']:,}"
            out(f"{fmt:<8} b/a speed = {ratio:.2f} {'PASS' if ok else 'MISS'} (target >= {TARGET[fmt]}), "
                f"CPU-s a/b = {cpu_ratio:.2f}; {same}")
    out("")
    out(f"peak RSS, day vs 4-day window (target for (b): within {RSS_TOLERANCE:.0%}; (a) is the engine's own)")
    out(f"{'format':<8} {'case':<25} {'1x rows':>10} {'1x MiB':>8} {'4x rows':>10} {'4x MiB':>8} {'4x s':>7} "
        f"{'change':>8}")
    for fmt in formats:
        for case in CASES:
            one, four = med.get((case, fmt, "day")), med.get((case, fmt, "quad"))
            if not (one and four):
                out(f"{fmt:<8} {LABEL[case]:<25} (failed)")
                continue
            change = four["peak_rss_mb"] / one["peak_rss_mb"] - 1
            ok = abs(change) <= RSS_TOLERANCE
            rows1, rows4 = one["rows"] or one_rows(med, fmt, "day"), four["rows"] or one_rows(med, fmt, "quad")
            if case == "ours":
                summary["rss_4x"][fmt] = {"rss_1x_mb": one["peak_rss_mb"], "rss_4x_mb": four["peak_rss_mb"],
                                          "rows_1x": rows1, "rows_4x": rows4, "change": round(change, 3),
                                          "pass": ok}
            out(f"{fmt:<8} {LABEL[case]:<25} {rows1 or 0:>10,} {one['peak_rss_mb']:>8.0f} {rows4 or 0:>10,} "
                f"{four['peak_rss_mb']:>8.0f} {four['seconds']:>7.1f} {change:>+8.1%}"
                f"{('  PASS' if ok else '  MISS') if case == 'ours' else ''}")
    return summary


def run(args: argparse.Namespace) -> int:
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    formats = [f for f in args.formats.split(",") if f]
    started = time.monotonic()
    log(f"bench.batch_export: {platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}Z")
    marker = prepare(log=log)
    counts = {w: _child("--count", w) for w in ("day", "quad")}
    if counts["day"]["all"] != marker["windows"]["day"]["rows"]:
        log(f"note: the request's day has {counts['day']['all']:,} rows, the prepared window "
            f"{marker['windows']['day']['rows']:,} (the cutoff or deletions differ)")
    plan = [(case, fmt, "day") for _ in range(args.reps) for fmt in formats for case in CASES]
    # (a) on the 4-day window too: the engine's own growth, the floor under (b)'s
    plan += [(case, fmt, "quad") for _ in range(args.reps_4x) for fmt in formats for case in CASES]
    runs: dict[tuple, list[dict]] = {}
    failures = []
    for case, fmt, window in plan:
        try:
            r = _child("--measure", case, "--format", fmt, "--window", window)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            failures.append(f"{case}/{fmt}/{window}: {str(exc)[-800:]}")
            log(f"  {case:<6} {fmt:<8} {window:<5} FAILED: {str(exc)[-800:]}")
            continue
        if r["rows"] is not None and r["rows"] != counts[window]["matched"]:
            failures.append(f"{case}/{fmt}/{window}: {r['rows']} rows, {counts[window]['matched']} match")
        runs.setdefault((case, fmt, window), []).append(r)
        log(f"  {case:<6} {fmt:<8} {window:<5} {r['seconds']:7.2f} s  cpu {r['cpu_s']:6.2f} s  "
            f"peak {r['peak_rss_mb']:6.0f} MiB  {r['bytes'] / 1e6:6.0f} MB")
    med = {k: _median(v) for k, v in runs.items()}
    summary = report(counts, med, formats, out=log)
    log("")
    log(f"bench.batch_export: {len(plan)} measurements in {(time.monotonic() - started) / 60:.1f} min, "
        f"medians of {args.reps} (day) / {args.reps_4x} (4-day) run(s); load average now "
        f"{os.getloadavg()[0]:.1f}")
    with open(RESULTS, "w") as fh:
        json.dump({"created_at": dt.datetime.now(dt.UTC).isoformat(), "host": platform.node(),
                   "cpus": os.cpu_count(), "data": marker, "counts": counts, "medians": list(med.values()),
                   "runs": [r for v in runs.values() for r in v], "failures": failures, **summary},
                  fh, indent=2, default=str)
    log(f"results: {RESULTS}")
    for f in failures:
        log(f"FAILED: {f}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="runs of each day-window case (median)")
    parser.add_argument("--reps-4x", type=int, default=1, help="runs of (b) on the 4-day window")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--count", choices=sorted(WINDOWS), help=argparse.SUPPRESS)  # child: print counts
    parser.add_argument("--measure", choices=CASES, help=argparse.SUPPRESS)  # child: one measurement
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--window", choices=sorted(WINDOWS), default="day", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count or args.measure:
        with exclusive_run(log=lambda m: print(m, file=sys.stderr, flush=True)):
            result = _count(args.count) if args.count else measure_one(args.measure, args.format, args.window)
        print(json.dumps(result), flush=True)
        return 0
    with exclusive_run(log=lambda m: print(m, flush=True)):
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
