"""The whole benchmark: prepare data, start moto, measure every (case, format) in fresh processes.

    python -m bench.run_all [--reps 3] [--reps-4x 1] [--budget-min 12] [--formats csv,jsonl,parquet]

Round 1 measures everything once (the day window for all four cases, then our local export of the
4-day window); further rounds repeat the day-window cases (and the 4-day one, up to `--reps-4x`) while
the projected finish stays inside `--budget-min`. Reported figures are medians over the rounds run.
Results also go to `bench/out/results.json`. Every S3 measurement gets a fresh moto server in its own
process (moto keeps objects in RAM and does not return the memory), stopped afterwards, error or not.

Ratios are speed ratios on the same window (rows/s of ours ÷ rows/s of the reference; every case
exports the same rows, so this is also time_ref ÷ time_ours). The CPU ratio beside it (CPU seconds of
the reference ÷ ours, all threads) is less sensitive to other load on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from bench.prepare import BENCH_DIR, LOCK_ENV, OUT_DIR, exclusive_run, prepare

ROOT = os.path.dirname(BENCH_DIR)
RESULTS = os.path.join(OUT_DIR, "results.json")
FORMATS = ("csv", "jsonl", "parquet")
CASES = ("native", "ours_local", "boto_upload", "ours_s3")
LABEL = {"native": "(a) native INTO OUTFILE", "ours_local": "(b) ours -> local dir",
         "boto_upload": "(c) boto3 upload_file", "ours_s3": "(d) ours -> moto S3"}
TARGET_BA = {"csv": 0.7, "jsonl": 0.7, "parquet": 0.5}
TARGET_DC = 0.8
RSS_TOLERANCE = 0.20
BUCKET = "bench"
CORES = os.cpu_count() or 1
MEASURE_TIMEOUT = 900


# ------------------------------------------------------------------------------------------------ moto


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """`python -m moto.server` in its own process (its memory is not the measured process's)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(OUT_DIR, "moto.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not answer within 60 s") from None
                time.sleep(0.2)

    def peak_rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server process so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def create_bucket(endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)


# ------------------------------------------------------------------------------------------- measuring


def measure(case: str, fmt: str, window: str, endpoint: str) -> dict:
    cmd = [sys.executable, "-m", "bench.measure", "--case", case, "--format", fmt, "--window", window,
           "--endpoint", endpoint, "--bucket", BUCKET]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "EXPORTS_SCRATCH_DIR": os.path.join(OUT_DIR, "scratch"), LOCK_ENV: str(os.getpid())}
    os.makedirs(env["EXPORTS_SCRATCH_DIR"], exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=MEASURE_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{case}/{fmt}/{window} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    result["process_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def median_of(runs: list[dict]) -> dict:
    """The per-field median of repeated runs of one (case, format, window)."""
    first = runs[0]
    out = {k: first[k] for k in ("case", "format", "window", "rows", "files", "subranges")}
    out["bytes"] = int(statistics.median(r["bytes"] for r in runs))
    for k in ("seconds", "rows_per_s", "mb_per_s", "peak_rss_mb", "cpu_s"):
        out[k] = statistics.median(r[k] for r in runs)
    server = [r["server_cpu_s"] for r in runs if r.get("server_cpu_s") is not None]
    out["server_cpu_s"] = statistics.median(server) if server else None
    out["runs"] = len(runs)
    out["seconds_all"] = [r["seconds"] for r in runs]
    out["peak_rss_all"] = [r["peak_rss_mb"] for r in runs]
    return out


# -------------------------------------------------------------------------------------------- reporting


def verdict(value: float, ok: bool) -> str:
    return f"{value:5.2f}  {'PASS' if ok else 'MISS'}"


def report(med: dict, formats: list[str], out=print) -> dict:
    summary: dict = {"ratios": {}, "rss_4x": {}}
    for fmt in formats:
        rows = [med.get((case, fmt, "day")) for case in CASES]
        out("")
        out(f"== {fmt} == day window, {rows[0]['rows'] if rows[0] else '?':,} rows "
            f"(medians of {max((r['runs'] for r in rows if r), default=0)} runs)")
        out(f"{'case':<26} {'rows/s':>9} {'MB/s':>7} {'MB':>7} {'seconds':>8} {'cpu s':>7} {'peak RSS MiB':>13} "
            f"{'moto cpu s':>11}")
        for case, r in zip(CASES, rows, strict=True):
            if r is None:
                out(f"{LABEL[case]:<26} {'(not run)':>9}")
                continue
            out(f"{LABEL[case]:<26} {r['rows_per_s']:>9,.0f} {r['mb_per_s']:>7.1f} {r['bytes'] / 1e6:>7.0f} "
                f"{r['seconds']:>8.2f} {r['cpu_s']:>7.2f} {r['peak_rss_mb']:>13.0f} "
                f"{'' if r.get('server_cpu_s') is None else format(r['server_cpu_s'], '11.2f')}")
        a, b, c, d = rows
        ratios = {}
        if a and b:
            ba = b["rows_per_s"] / a["rows_per_s"]
            ratios["b/a"] = {"value": round(ba, 3), "target": TARGET_BA[fmt], "pass": ba >= TARGET_BA[fmt],
                             "cpu_ratio": round(a["cpu_s"] / b["cpu_s"], 3)}
            out(f"b/a = {verdict(ba, ba >= TARGET_BA[fmt])}  (target >= {TARGET_BA[fmt]}; "
                f"CPU a/b = {a['cpu_s'] / b['cpu_s']:.2f})")
            # Both are CPU-bound on this box: (b) cannot finish before its CPU seconds / cores.
            floor_b = max(a["seconds"], b["cpu_s"] / CORES)
            ratios["b/a"]["cpu_bound"] = round(a["seconds"] / floor_b, 3)
            out(f"      note: (b) burns {b['cpu_s']:.1f} CPU-s vs (a) {a['cpu_s']:.1f}; on {CORES} cores that alone "
                f"caps b/a at {a['seconds'] / floor_b:.2f}")
        if c and d:
            dc = d["rows_per_s"] / c["rows_per_s"]
            ratios["d/c"] = {"value": round(dc, 3), "target": TARGET_DC, "pass": dc >= TARGET_DC}
            out(f"d/c = {verdict(dc, dc >= TARGET_DC)}  (target >= {TARGET_DC}; MB/s d {d['mb_per_s']:.1f} "
                f"vs c {c['mb_per_s']:.1f})")
            if a:
                # (d) has to do (a)'s work and (c)'s: at best overlapped (the slower of the two), at worst in
                # sequence. When the engine is slower than the server, d/c cannot reach 1 whatever we do.
                overlap, serial = max(a["seconds"], c["seconds"]), a["seconds"] + c["seconds"]
                ratios["d/c"].update({"bound_overlapped": round(overlap / d["seconds"], 3),
                                      "bound_serial": round(serial / d["seconds"], 3),
                                      "engine_slower_than_server": a["seconds"] > c["seconds"]})
                out(f"      note: engine (a) {a['seconds']:.1f} s vs server (c) {c['seconds']:.1f} s; (d) reaches "
                    f"{overlap / d['seconds']:.2f} of the overlapped bound max(a,c) and {serial / d['seconds']:.2f} "
                    "of the serial bound a+c")
            if c.get("server_cpu_s") is not None and d.get("server_cpu_s") is not None:
                c_total, d_total = c["cpu_s"] + c["server_cpu_s"], d["cpu_s"] + d["server_cpu_s"]
                floor_d = max(c["seconds"], d_total / CORES)
                ratios["d/c"].update({"cpu_total_c": round(c_total, 2), "cpu_total_d": round(d_total, 2),
                                      "cpu_bound": round(c["seconds"] / floor_d, 3)})
                out(f"      note: CPU-s client+server: (c) {c['cpu_s']:.1f}+{c['server_cpu_s']:.1f}, (d) "
                    f"{d['cpu_s']:.1f}+{d['server_cpu_s']:.1f}; on {CORES} cores that alone caps d/c at "
                    f"{c['seconds'] / floor_d:.2f}")
        summary["ratios"][fmt] = ratios

    out("")
    out("== peak RSS of (b), day window vs 4-day window (4x rows) ==")
    out(f"{'format':<8} {'1x rows':>10} {'1x MiB':>8} {'4x rows':>10} {'4x MiB':>8} {'4x s':>7} {'change':>8}  "
        f"target within {RSS_TOLERANCE:.0%}")
    for fmt in formats:
        one, four = med.get(("ours_local", fmt, "day")), med.get(("ours_local", fmt, "quad"))
        if not (one and four):
            out(f"{fmt:<8} (not run)")
            continue
        change = four["peak_rss_mb"] / one["peak_rss_mb"] - 1
        ok = abs(change) <= RSS_TOLERANCE
        summary["rss_4x"][fmt] = {"rss_1x_mb": one["peak_rss_mb"], "rss_4x_mb": four["peak_rss_mb"],
                                  "rows_1x": one["rows"], "rows_4x": four["rows"],
                                  "change": round(change, 3), "pass": ok}
        out(f"{fmt:<8} {one['rows']:>10,} {one['peak_rss_mb']:>8.0f} {four['rows']:>10,} {four['peak_rss_mb']:>8.0f} "
            f"{four['seconds']:>7.1f} {change:>+8.1%}  {'PASS' if ok else 'MISS'}")
    return summary


# ------------------------------------------------------------------------------------------------ main


def code_version() -> str:
    """The commit under test, and whether the package differs from it (others edit concurrently)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "exports_pipeline"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in exports_pipeline/' if dirty else ''}"


def main(argv: list[str] | None = None) -> int:
    with exclusive_run(log=lambda m: print(m, flush=True)):
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="rounds of the day-window cases (median)")
    parser.add_argument("--reps-4x", type=int, default=1, help="rounds of the 4-day-window RSS check")
    parser.add_argument("--budget-min", type=float, default=12.0,
                        help="start no further round whose projected end is past this many minutes")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--formats-4x", default=",".join(FORMATS), help="formats of the 4-day RSS check")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    started = time.monotonic()
    code_at_start = code_version()
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    log(f"bench: {platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}Z; code {code_at_start}")
    marker = prepare(log=log)
    runs: dict[tuple, list[dict]] = {}
    rounds_done = 0
    failures: list[dict] = []
    moto_peaks: list[float] = []

    def run_one(case: str, fmt: str, window: str) -> dict:
        """One measurement; S3 cases get a fresh moto server (it keeps objects in RAM and does not give
        memory back), stopped afterwards whatever happens."""
        if case not in ("boto_upload", "ours_s3"):
            return measure(case, fmt, window, "")
        moto = Moto()
        try:
            create_bucket(moto.endpoint)
            cpu0 = moto.cpu_seconds()
            result = measure(case, fmt, window, moto.endpoint)
            cpu1 = moto.cpu_seconds()
            result["server_cpu_s"] = round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None
            result["server_peak_rss_mb"] = moto.peak_rss_mb()
            moto_peaks.append(result["server_peak_rss_mb"] or 0)
            return result
        finally:
            moto.stop()

    for rnd in range(1, max(args.reps, args.reps_4x) + 1):
        plan = []
        if rnd <= args.reps:
            plan += [(case, fmt, "day") for fmt in formats for case in CASES]
        if rnd <= args.reps_4x:
            plan += [("ours_local", fmt, "quad") for fmt in args.formats_4x.split(",") if fmt]
        if rnd > 1:  # projected from the same cases' earlier rounds
            projected = sum(statistics.mean(r["process_seconds"] for r in runs[k]) for k in plan if k in runs)
            elapsed = time.monotonic() - started
            if elapsed + projected > args.budget_min * 60:
                log(f"round {rnd}: skipped, would end at ~{(elapsed + projected) / 60:.1f} min "
                    f"(budget {args.budget_min} min)")
                break
        log(f"round {rnd}: {len(plan)} measurements, load average {os.getloadavg()[0]:.1f}")
        for case, fmt, window in plan:
            try:
                result = run_one(case, fmt, window)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # one retry, then go on without it
                log(f"  {case:<12} {fmt:<8} {window:<5} FAILED, retrying once: {str(exc).splitlines()[0]}")
                try:
                    result = run_one(case, fmt, window)
                except (RuntimeError, subprocess.TimeoutExpired) as exc2:
                    failures.append({"case": case, "format": fmt, "window": window, "error": str(exc2)[-2000:]})
                    log(f"  {case:<12} {fmt:<8} {window:<5} FAILED again: {str(exc2)[-500:]}")
                    continue
            runs.setdefault((case, fmt, window), []).append(result)
            log(f"  {case:<12} {fmt:<8} {window:<5} {result['seconds']:7.2f} s  {result['rows_per_s']:>9,} rows/s "
                f"{result['mb_per_s']:7.1f} MB/s  peak {result['peak_rss_mb']:6.0f} MiB  cpu {result['cpu_s']:6.2f} s")
        rounds_done = rnd
    moto_peak = max(moto_peaks, default=None)

    med = {k: median_of(v) for k, v in runs.items()}
    summary = report(med, formats, out=log)
    total = time.monotonic() - started
    log("")
    log(f"bench: {rounds_done} round(s), {sum(len(v) for v in runs.values())} measurements in {total / 60:.1f} min; "
        f"moto peak RSS {moto_peak or 0:.0f} MiB (fresh server per S3 run); load average now {os.getloadavg()[0]:.1f}")
    doc = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(), "host": platform.node(), "cpus": os.cpu_count(),
        "code": code_at_start, "code_at_end": code_version(), "data": marker, "total_seconds": round(total, 1), "moto_peak_rss_mb": moto_peak,
        "medians": [med[k] for k in sorted(med)], "failures": failures, "runs": [r for k in sorted(runs) for r in runs[k]],
        **summary,
    }
    with open(RESULTS, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
    log(f"results: {RESULTS}")
    for f in failures:
        log(f"FAILED: {f['case']}/{f['format']}/{f['window']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
