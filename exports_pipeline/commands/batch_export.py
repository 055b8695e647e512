"""`exports-pipeline batch-export create|list|show|cancel|url`: one-off filtered exports of a project's events.

`create` validates the whole request before it stores anything and prints the id. `--run` runs it in this
process through the same `batch_export` job the sensor launches (scripts, the demo, hosts without a
daemon); `--wait` waits for the run the sensor launches and says so plainly when no daemon picks it up.
Both print the outcome and exit non-zero unless the export COMPLETED.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import TYPE_CHECKING

from exports_pipeline.commands import open_state

if TYPE_CHECKING:
    from exports_pipeline.settings import Settings
    from exports_pipeline.state.models import BatchExport

PICKUP_TIMEOUT_SECONDS = 120  # --wait: how long a QUEUED request may wait for a daemon to start its run
POLL_SECONDS = 1.0
STATUSES = ("QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch-export", help="one-off filtered exports of a project's events to a downloadable file")
    bsub = p.add_subparsers(dest="batch_export_command", required=True)

    c = bsub.add_parser("create", help="validate and queue a batch export; prints its id",
                        epilog="The filter is Langfuse's filter JSON for the events table, as its UI sends it.")
    c.add_argument("--project", required=True, metavar="P")
    c.add_argument("--format", required=True, choices=("csv", "json", "jsonl", "parquet"))
    c.add_argument("--compression", default="none", choices=("none", "gzip", "zstd"))
    source = c.add_mutually_exclusive_group()
    source.add_argument("--filter", metavar="JSON", help="Langfuse filter JSON (an array of conditions)")
    source.add_argument("--filter-file", metavar="PATH", help="read the filter JSON from this file")
    c.add_argument("--search", metavar="TEXT", help="matched literally, case-insensitive")
    c.add_argument("--search-type", action="append", choices=("id", "content", "input", "output"),
                   help="where --search looks (repeatable; default id)")
    c.add_argument("--order-by", metavar="COLUMN[:asc|desc]", help="default startTime:desc")
    c.add_argument("--columns", metavar="a,b,...", help="a subset of the columns, in this order")
    c.add_argument("--limit", type=_positive, metavar="N", help="at most N rows (lowers EXPORTS_BATCH_EXPORT_ROW_LIMIT)")
    c.add_argument("--name", metavar="NAME")
    c.add_argument("--user-id", metavar="U", help="who asked (recorded with the request)")
    c.add_argument("--email", metavar="ADDRESS", help="mail the link (or the failure) here when SMTP is configured")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="wait for the run the sensor launches, print the outcome")
    how.add_argument("--run", action="store_true", help="run it now in this process, print the outcome")
    c.set_defaults(func=cmd_create)

    ls = bsub.add_parser("list", help="batch exports, newest first")
    ls.add_argument("--project", metavar="P")
    ls.add_argument("--status", choices=STATUSES)
    ls.set_defaults(func=cmd_list)

    for name, func, text in (("show", cmd_show, "status, rows, truncation, size, file, expiry and message"),
                             ("cancel", cmd_cancel, "cancel: a queued export never runs, a running one stops"),
                             ("url", cmd_url, "a fresh download link valid 10 minutes (local: the file's path)")):
        s = bsub.add_parser(name, help=text)
        s.add_argument("id", metavar="ID")
        s.set_defaults(func=func)


# ------------------------------------------------------------------------------------------------ create


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.batch_export.request import BatchRequest, submit

    filter_text = args.filter
    if args.filter_file:
        try:
            with open(args.filter_file, encoding="utf-8") as fh:
                filter_text = fh.read()
        except OSError as exc:
            raise ValueError(f"--filter-file: cannot read {args.filter_file}: {exc.strerror}") from None
    request = BatchRequest(project_id=args.project, format=args.format, compression=args.compression,
                           filter=filter_text, search=args.search, search_types=args.search_type,
                           order_by=args.order_by, columns=args.columns, limit=args.limit, name=args.name,
                           user_id=args.user_id, email=args.email)
    state = open_state(settings)
    if args.run:
        return _run_here(settings, state, request)
    export = submit(state, request, settings.batch_export.row_limit)
    print(export.id, flush=True)
    if args.wait:
        return _wait(export.id, state)
    return 0


def _run_here(settings: Settings, state, request) -> int:
    """The `batch_export` job in this process (the instance of DAGSTER_HOME when set, so `make dev` shows
    the run; else a throwaway one)."""
    import os

    import dagster as dg

    from exports_pipeline.batch_export.defs import submit_and_run

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    with instance:
        export = submit_and_run(settings, state, request, instance)
    print(export.id, flush=True)
    return _report(export)


def _wait(export_id: str, state) -> int:
    picked_by = time.monotonic() + PICKUP_TIMEOUT_SECONDS
    while True:
        export = state.get_batch_export(export_id)
        if export.finished:
            return _report(export)
        if export.status == "QUEUED" and time.monotonic() > picked_by:
            print(f"exports-pipeline: no Dagster daemon started batch export {export_id} within "
                  f"{PICKUP_TIMEOUT_SECONDS} s. Is `dagster-daemon run` (or `make dev`) running on this code "
                  "location with batch_export_requests_sensor on? The request stays QUEUED: see it with "
                  f"`batch-export show {export_id}`, cancel it with `batch-export cancel {export_id}`, or "
                  "create it again with --run to run it in this process.", file=sys.stderr)
            return 3
        time.sleep(POLL_SECONDS)


# ------------------------------------------------------------------------------------------ reading


def describe(export: BatchExport) -> list[tuple[str, str]]:
    """`show`'s lines: everything a person needs to know about one export, in words."""
    from exports_pipeline.resources.object_store.sizing import human_bytes

    def when(value: dt.datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""

    lines = [("id", export.id), ("name", export.name), ("project", export.project_id), ("status", export.status),
             ("format", export.format + ("" if export.compression == "none" else f" ({export.compression})")),
             ("created", when(export.created_at))]
    if export.rows_matched is not None:
        lines.append(("rows matched", f"{export.rows_matched:,}"))
    if export.rows_written is not None:
        lines.append(("rows written", f"{export.rows_written:,}"))
    if export.status == "COMPLETED":
        lines.append(("truncated", f"yes: {export.rows_matched:,} rows matched, the file holds the first "
                      f"{export.rows_written:,} (the row limit)" if export.truncated else "no"))
        lines.append(("bytes", human_bytes(export.bytes or 0)))
        lines.append(("file", export.object_uri or ""))
        expired = export.expires_at is not None and export.expires_at <= dt.datetime.now(dt.UTC)
        lines.append(("expires", when(export.expires_at) + (" (expired)" if expired else "")))
        if export.file_deleted_at:
            lines.append(("file deleted", when(export.file_deleted_at)))
    if export.finished_at:
        lines.append(("finished", when(export.finished_at)))
    if export.cancel_requested_at and export.status == "PROCESSING":
        lines.append(("cancel", f"requested at {when(export.cancel_requested_at)}; the run stops within seconds"))
    if export.log:
        lines.append(("error", export.log))
    if export.message:
        lines.append(("message", export.message))
    if export.email:
        lines.append(("e-mail", export.email))
    return lines


def _print(export: BatchExport, out=None) -> None:
    width = max(len(k) for k, _ in describe(export))
    for key, value in describe(export):
        print(f"{key.ljust(width)}  {value}", file=out or sys.stdout)


def _report(export: BatchExport) -> int:
    _print(export)
    if export.status == "COMPLETED" and export.url and not export.url.startswith(("http://", "https://")):
        print(f"get it: {export.url}")
    elif export.status == "COMPLETED":
        print(f"get it: `exports-pipeline batch-export url {export.id}` (a link valid 10 minutes)")
    return 0 if export.status == "COMPLETED" else 1


def _get(state, export_id: str) -> BatchExport:
    export = state.get_batch_export(export_id)
    if export is None:
        raise ValueError(f"ID: there is no batch export {export_id!r} (see `exports-pipeline batch-export list`)")
    return export


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.cli import print_table

    exports = open_state(settings).list_batch_exports(project_id=args.project, status=args.status)
    if not exports:
        print("no batch exports")
        return 0
    print_table([{"id": e.id, "project": e.project_id, "status": e.status, "format": e.format,
                  "rows": e.rows_written, "truncated": "yes" if e.truncated else "",
                  "created": e.created_at.strftime("%Y-%m-%d %H:%M:%S"), "name": e.name} for e in exports],
                ["id", "project", "status", "format", "rows", "truncated", "created", "name"])
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    _print(_get(open_state(settings), args.id))
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    state = open_state(settings)
    export = _get(state, args.id)
    if export.finished:
        print(f"batch export {export.id} is already {export.status}; nothing to cancel")
        return 1 if export.status != "CANCELLED" else 0
    if state.cancel_batch_export(export.id) is not None:
        print(f"batch export {export.id} cancelled before it ran")
        return 0
    if state.request_batch_export_cancel(export.id) is None:  # it finished meanwhile
        return cmd_cancel(args, settings)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        export = state.get_batch_export(export.id)
        if export.finished:
            break
        time.sleep(0.5)
    if export.status == "CANCELLED":
        print(f"batch export {export.id} cancelled while running: {export.message}")
        return 0
    if export.finished:
        print(f"batch export {export.id} finished as {export.status} before the cancel reached it")
        return 1
    print(f"cancel of batch export {export.id} requested; its run {export.run_id} has not stopped yet "
          f"(check with `batch-export show {export.id}`)")
    return 0


def cmd_url(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.batch_export.runner import FRESH_LINK_SECONDS, make_link
    from exports_pipeline.resources.object_store.resource import ObjectStoreResource

    export = _get(open_state(settings), args.id)
    if export.status != "COMPLETED":
        print(f"exports-pipeline: batch export {export.id} is {export.status}: there is no file", file=sys.stderr)
        return 1
    if export.file_deleted_at is not None:
        print(f"exports-pipeline: the file of batch export {export.id} was deleted on "
              f"{export.file_deleted_at:%Y-%m-%d} (retention); request the export again", file=sys.stderr)
        return 1
    if export.expires_at is not None and export.expires_at <= dt.datetime.now(dt.UTC):
        print(f"exports-pipeline: batch export {export.id} expired on {export.expires_at:%Y-%m-%d %H:%M} UTC; "
              "request the export again", file=sys.stderr)
        return 1
    print(make_link(ObjectStoreResource(), settings.batch_export, export, FRESH_LINK_SECONDS))
    return 0
