"""`exports-pipeline`: the command line for operators and for the demo.

Every command reads the same settings as the code location (`exports_pipeline.settings`), so what a
command does by hand is what a Dagster run does on schedule.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
from collections.abc import Sequence

from exports_pipeline.commands import batch_export, export_objects, integrations
from exports_pipeline.settings import Settings, SettingsError, get_settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in YYYY-MM-DD form") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def print_table(rows: Sequence[dict], columns: Sequence[str], out=None) -> None:
    """A plain aligned text table (numbers right-aligned)."""
    out = out or sys.stdout
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), int | float) for r in rows) and rows for c in columns]
    line = lambda vals: "  ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    print(line(list(columns)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


# ------------------------------------------------------------------------------------------------ commands


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.events.ddl import create_events_table
    from exports_pipeline.events.seed import seed
    from exports_pipeline.resources.clickhouse import ClickHouseResource

    clickhouse = ClickHouseResource(url=settings.clickhouse_url, events_table=settings.events_table)
    with clickhouse.client() as client:
        create_events_table(client, settings.events_table)
        stats = seed(client, settings.events_table, args.projects, args.days, args.events_per_day,
                     start=args.start, seed=args.seed, replace=args.replace)
    print(
        f"seeded {stats.rows_inserted:,} rows ({stats.base_rows:,} spans, {stats.updated_rows:,} newer versions, "
        f"{stats.deleted_rows:,} deletions) for {len(stats.project_ids)} projects over {len(stats.days)} days "
        f"[{stats.time_from:%Y-%m-%d}, {stats.time_to:%Y-%m-%d}) into {stats.table} "
        f"in {stats.seconds:.2f} s: {stats.rows_per_second:,.0f} rows/s"
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.state.migrate import upgrade
    from exports_pipeline.urls import mask_url

    head = upgrade(settings.database_url)
    print(f"state database {mask_url(settings.database_url)} is at revision {head}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.demo import run_demo

    return run_demo(settings, events_per_day=args.events_per_day)


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exports-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("seed", help="create the events table if missing and fill it with synthetic Langfuse events")
    p.add_argument("--projects", type=_positive, required=True)
    p.add_argument("--days", type=_positive, required=True)
    p.add_argument("--events-per-day", type=_positive, required=True, help="spans per project per day")
    p.add_argument("--start", type=_date, default=None, help="first UTC day (default: today minus --days)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    p.add_argument("--replace", action="store_true", help="delete those projects' rows in that range first")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("db", help="the pipeline's own state database")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply the state migrations (also done automatically on first use)")
    up.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("demo", help="seed the embedded ClickHouse and run the main job on embedded defaults")
    p.add_argument("--events-per-day", type=_positive, default=20_000)
    p.set_defaults(func=cmd_demo)

    integrations.register(sub)
    export_objects.register(sub)
    batch_export.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a problem is one line on stderr (exit 2: bad input or settings, 1: it failed)."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # inside the try: output to a closed pipe fails here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`... | head -1`). Python's recipe (docs: "Note on SIGPIPE"): point stdout at
        # devnull so the interpreter's final flush cannot fail again, and exit quietly with the status a
        # process killed by SIGPIPE reports to the shell (128 + 13), as `git log | head -1` does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    from exports_pipeline.errors import ExportsError

    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"exports-pipeline: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args, settings)
    except (SettingsError, ValueError) as exc:
        print(f"exports-pipeline: {exc}", file=sys.stderr)
        return 2
    except ExportsError as exc:  # e.g. the state database cannot be opened: the message says which and why
        print(f"exports-pipeline: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
