"""The benchmark's data: a chDB directory under `bench/out/` with `events_full` seeded.

Project `proj-1`, four consecutive UTC days from 2026-01-05, `EVENTS_PER_DAY` base spans per day (plus
the seeder's unmerged update versions and tombstones, so `FINAL` has real work to do):

* the **day** window `[2026-01-05, 2026-01-06)`: one project's day, ≥ 1M rows after `FINAL`;
* the **quad** window `[2026-01-05, 2026-01-09)`: the same project over four days, ≈ 4x the rows, for
  the check that the export's peak RSS does not grow with the window.

Idempotent: a directory prepared with the same parameters and the same DDL is reused after a quick
row count; anything else is rebuilt from scratch. `python -m bench.prepare [--force]`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time

from exports_pipeline.events.ddl import create_events_table, create_table_sql
from exports_pipeline.events.queries import WINDOW_FILTER
from exports_pipeline.events.seed import seed
from exports_pipeline.windows import Window
from exports_pipeline.resources.clickhouse import ClickHouseResource

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(BENCH_DIR, "out")
CHDB_DIR = os.path.join(OUT_DIR, "chdb")
MARKER = os.path.join(OUT_DIR, "prepared.json")
RUN_LOCK = os.path.join(OUT_DIR, "run.lock")
LOCK_ENV = "EXPORTS_BENCH_LOCK_HELD"

TABLE = "events_full"
PROJECT = "proj-1"
START = dt.date(2026, 1, 5)
DAYS = 4
# 1.02M base spans a day: the seeder tombstones ≈1% of them, so the day still exports ≥ 1,000,000 rows.
EVENTS_PER_DAY = 1_020_000
SEED = 0

_T0 = dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC)
WINDOWS: dict[str, Window] = {
    "day": Window(_T0, _T0 + dt.timedelta(days=1)),
    "quad": Window(_T0, _T0 + dt.timedelta(days=DAYS)),
}


@contextlib.contextmanager
def exclusive_run(log=print):
    """One benchmark at a time on this data: two runs sharing two cores and one chDB directory (whose
    lock they would queue on inside their timed sections) would corrupt each other's figures."""
    if os.environ.get(LOCK_ENV) == str(os.getppid()):  # a measurement started by run_all, which holds it
        yield
        return
    import fcntl

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(RUN_LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            log(f"bench: another benchmark run holds {RUN_LOCK} ({fh.read().strip() or 'unknown'}); waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def clickhouse() -> ClickHouseResource:
    return ClickHouseResource(url=f"chdb://{CHDB_DIR}", events_table=TABLE)


def _fingerprint() -> str:
    """Parameters and DDL: a change to either (another engineer's edit) means a rebuild."""
    text = json.dumps({"table": TABLE, "start": START.isoformat(), "days": DAYS, "epd": EVENTS_PER_DAY,
                       "seed": SEED, "ddl": create_table_sql(TABLE)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _window_rows(client, window: Window) -> int:
    sql = f"SELECT count() FROM {TABLE} FINAL WHERE {WINDOW_FILTER}"
    return int(client.command(sql, parameters={"project_id": PROJECT, "start": window.start, "end": window.end}))


def _layout(client) -> dict:
    parts, rows = client.query(f"SELECT count(), sum(rows) FROM system.parts WHERE table = '{TABLE}' AND active"
                               ).result_rows[0]
    return {"active_parts": int(parts), "table_rows": int(rows)}


def load_marker() -> dict | None:
    try:
        with open(MARKER) as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return None


def prepare(force: bool = False, log=print) -> dict:
    """The prepared data set's description (row counts per window); builds it when needed."""
    os.makedirs(OUT_DIR, exist_ok=True)
    marker = load_marker()
    ch = clickhouse()
    if marker and not force and marker.get("fingerprint") == _fingerprint() and os.path.isdir(CHDB_DIR):
        with ch.client() as client:
            try:
                ok = _window_rows(client, WINDOWS["day"]) == marker["windows"]["day"]["rows"]
            except Exception:  # noqa: BLE001 - a broken directory is rebuilt
                ok = False
        if ok:
            log(f"bench data: reusing {CHDB_DIR} ({marker['windows']['day']['rows']:,} rows in the day window, "
                f"{marker['windows']['quad']['rows']:,} in the 4-day window)")
            return marker
        log("bench data: existing directory does not match its marker; rebuilding")
    shutil.rmtree(CHDB_DIR, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(MARKER)
    log(f"bench data: seeding {PROJECT}, {DAYS} days x {EVENTS_PER_DAY:,} spans into {CHDB_DIR} ...")
    t0 = time.perf_counter()
    with ch.client() as client:
        create_events_table(client, TABLE)
        stats = seed(client, TABLE, projects=1, days=DAYS, events_per_day=EVENTS_PER_DAY, start=START, seed=SEED)
        windows = {name: {"start": w.start.isoformat(), "end": w.end.isoformat(), "rows": _window_rows(client, w)}
                   for name, w in WINDOWS.items()}
        layout = _layout(client)
    marker = {
        "fingerprint": _fingerprint(), "chdb_dir": CHDB_DIR, "table": TABLE, "project_id": PROJECT,
        "events_per_day": EVENTS_PER_DAY, "days": DAYS, "rows_inserted": stats.rows_inserted,
        "seed_seconds": round(stats.seconds, 1), "windows": windows, **layout,
        "prepared_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    with open(MARKER + ".tmp", "w") as fh:
        json.dump(marker, fh, indent=2)
    os.replace(MARKER + ".tmp", MARKER)
    log(f"bench data: {stats.rows_inserted:,} rows inserted in {time.perf_counter() - t0:.1f} s; day window "
        f"{windows['day']['rows']:,} rows, 4-day window {windows['quad']['rows']:,} rows (after FINAL)")
    return marker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching directory exists")
    args = parser.parse_args(argv)
    with exclusive_run():
        marker = prepare(force=args.force)
    print(json.dumps(marker, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
