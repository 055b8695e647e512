"""One batch export, from its row to a committed file, a link and a mail.

Follow a request: claim the row (the same run may claim it again: a step retry carries on) -> count the
matching rows (`count_sql`: how many matched, so a cut is recorded, never silent; a startTime-ordered text
export counts per time slice, each then its own bounded query: `slices.py`) -> record the object
in `event_log` (before it exists, so a crash never leaves an object nobody knows about) -> ClickHouse
writes the file (`export_sql`) while it is uploaded (`export.files`, the object-storage export's own
writers: multipart, aborted on any failure, nothing under the key until it is whole) -> presigned link
-> COMPLETED -> mail. A watcher polls the row for a cancel request; the engine's waits then stop within
a fraction of a second, the upload is aborted and the row becomes CANCELLED with nothing left behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from exports_pipeline.batch_export.query import BatchQuery, count_sql, export_sql
from exports_pipeline.batch_export.request import stored_query
from exports_pipeline.batch_export.slices import (
    ARROW_SETTINGS,
    DEFAULT_SLICE_BYTES,
    PARQUET_ROW_GROUP_ROWS,
    SlicePlan,
    plan_slices,
    write_parquet,
)
from exports_pipeline.errors import ConfigError, ExportCancelled, ExportsError
from exports_pipeline.events.queries import PARQUET_SETTINGS, TEXT_SETTINGS
from exports_pipeline.files import ExportedFile, engine_parquet_files, engine_text_files
from exports_pipeline.formats import file_extension, get_format
from exports_pipeline.resources.clickhouse import ClickHouseResource, in_one_session, query_tags
from exports_pipeline.resources.object_store.base import ObjectStore
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import BatchExportSettings
from exports_pipeline.state.models import BATCH_EXPORT_ENTITY, BatchExport, EventLogEntry, utcnow

SINK = "batch_export"  # run tag, pool and query tag of batch exports
FRESH_LINK_SECONDS = 600  # `batch-export url`: a new link lives 10 minutes, as in Langfuse
CANCEL_POLL_SECONDS = 1.0
ROW_OVERHEAD_BYTES = 700  # rendered size of a row without input/output, for multipart sizing
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ClaimLost(ExportsError):
    """Another run owns the row (two launches of one request): this run leaves it alone."""


@dataclass
class BatchOutcome:
    """What a run did; `export` is the row as it ended."""

    export: BatchExport
    seconds: float = 0.0
    link: str | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.export.status

    def metadata(self) -> dict:
        """The run's metadata: object URI, rows, bytes, seconds, rows/s and the link."""
        e = self.export
        meta = {"status": e.status, "export_id": e.id, "project_id": e.project_id}
        if e.status == "COMPLETED":
            rows = e.rows_written or 0
            meta.update({"uri": e.object_uri, "rows": rows, "rows_matched": e.rows_matched,
                         "truncated": truncation_words(e) or "no", "bytes": e.bytes, "seconds": round(self.seconds, 3),
                         "rows_per_second": round(rows / self.seconds, 1) if self.seconds else 0.0,
                         "link": self.link or e.url, "expires_at": e.expires_at.isoformat() if e.expires_at else None})
        if e.message:
            meta["message"] = e.message
        if e.log:
            meta["error"] = e.log
        return meta


def summary(export: BatchExport):
    """The row as the mails see it."""
    from exports_pipeline.batch_export.mail import BatchExportSummary

    return BatchExportSummary(
        export_id=export.id, name=export.name, project_id=export.project_id, format=export.format.lower(),
        rows_written=export.rows_written or 0, rows_matched=export.rows_matched, truncated=export.truncated,
        bytes=export.bytes or 0, url=export.url, expires_at=export.expires_at, message=export.log)


def truncation_words(export: BatchExport) -> str | None:
    """The cut in words (the mail's own sentence), for `show`, the run metadata and the row's message."""
    from exports_pipeline.batch_export.mail import truncation_text

    return truncation_text(summary(export)) if export.truncated else None


def file_name(export: BatchExport) -> str:
    """The download's name: the request's name made safe, the export id, the extension."""
    fmt = get_format(export.format.lower())
    stem = _UNSAFE.sub("-", export.name).strip("-.")[:80] or "events"
    return f"{stem}-{export.id}.{file_extension(fmt, export.compression)}"


def object_key(store: ObjectStore, export: BatchExport) -> str:
    """One object per export, under its project and its id."""
    return store.destination.key_for(f"{export.project_id}/{export.id}/{file_name(export)}")


def open_store(object_store: ObjectStoreResource, settings: BatchExportSettings) -> ObjectStore:
    destination = settings.store_destination()
    if destination.scheme == "file":  # the deployment's own directory (EXPORTS_HOME/batch-exports by default)
        os.makedirs(destination.bucket, exist_ok=True)
    return object_store.open(destination)


def make_link(object_store: ObjectStoreResource, settings: BatchExportSettings, export: BatchExport,
              seconds: int) -> str:
    """A presigned GET (attachment, the file's name) signed for the external endpoint; local: the path."""
    destination = settings.link_destination()
    if destination.scheme == "file":
        return destination.bucket.rstrip("/") + "/" + export.object_key.removeprefix(destination.prefix)
    with object_store.open(destination) as store:
        return store.presign_get(export.object_key, seconds, filename=file_name(export))


@contextlib.contextmanager
def _cancel_watch(state, export_id: str, poll: float) -> Iterator[threading.Event]:
    """An event set once someone asks to cancel `export_id` (polled in the state DB)."""
    stop, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(poll):
            with contextlib.suppress(Exception):  # a flaky read must not kill the export; the next poll retries
                row = state.get_batch_export(export_id)
                if row is not None and row.cancel_requested_at is not None:
                    stop.set()
                    return

    thread = threading.Thread(target=watch, name=f"cancel-watch-{export_id[:8]}", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        done.set()
        thread.join()


@in_one_session
def run_batch_export(export_id: str, *, clickhouse: ClickHouseResource, object_store: ObjectStoreResource,
                     state, settings: BatchExportSettings, run_id: str,
                     log: Callable[[str], None] = lambda _m: None, engine_settings: dict | None = None,
                     cancel_poll_seconds: float = CANCEL_POLL_SECONDS,
                     slice_bytes: int = DEFAULT_SLICE_BYTES) -> BatchOutcome:
    """Run `export_id` to COMPLETED or CANCELLED; any failure is raised (after cleaning up) for the caller
    to retry or record (`faults.diagnose`). `engine_settings` are extra ClickHouse settings for the
    export query (operators' tuning; tests provoke faults with them); `slice_bytes` sizes the time
    slices of a startTime-ordered text export (`slices.py`)."""
    started = time.monotonic()
    export = state.claim_batch_export(export_id, run_id)
    if export is None:
        current = state.get_batch_export(export_id)
        if current is None:
            raise ConfigError(f"there is no batch export {export_id}", field="export_id")
        if current.finished:
            log(f"batch export {export_id} is already {current.status}; nothing to do")
            return BatchOutcome(current)
        raise ClaimLost(f"batch export {export_id} is being run by run {current.run_id}; this run leaves it alone")
    if export.cancel_requested_at is not None:
        return BatchOutcome(_acknowledge(state, export, "cancelled before it started; no file was written"))

    query = stored_query(export)
    tags = query_tags(run=run_id, export=export.id, sink=SINK)
    table = clickhouse.events_table
    plan = plan_slices(clickhouse, query, tags, slice_bytes)
    if plan is None:
        sql, params = count_sql(table, query)
        matched = int(clickhouse.query_dicts(sql, params, tags=tags)[0]["rows"])
    else:
        matched = plan.matched
    state.record_batch_export_progress(export.id, rows_matched=matched)
    expected_rows = min(matched, query.limit)
    log(f"batch export {export.id}: {matched:,} rows match; writing {expected_rows:,} as {export.format}")

    with open_store(object_store, settings) as store:
        key = object_key(store, export)
        entry = EventLogEntry(bucket_name=store.destination.bucket, bucket_path=key, project_id=export.project_id,
                              entity_type=BATCH_EXPORT_ENTITY, entity_id=export.id,
                              event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, store.uri(key))))
        state.upsert_event_log([entry])
        try:
            with _cancel_watch(state, export.id, cancel_poll_seconds) as stop:
                written = _write(clickhouse, store, export, query, key, expected_rows, tags, stop, engine_settings,
                                 plan)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the export's own error is the one to report
                _forget(state, store, export, key)  # nothing was committed under the key; nor is its row
            if isinstance(exc, ExportCancelled):
                return BatchOutcome(_acknowledge(state, export, "cancelled while running; the upload was "
                                                 "aborted and no file was kept"), time.monotonic() - started)
            raise

    seconds = time.monotonic() - started
    provisional = _with_object(export, written, key)
    expires_at = utcnow() + dt.timedelta(hours=settings.link_hours)
    link = make_link(object_store, settings, provisional, settings.link_hours * 3600)
    truncated = matched > written.rows
    done = state.complete_batch_export(
        export.id, link, expires_at, rows_written=written.rows, rows_matched=matched, truncated=truncated,
        bytes=written.obj.size, object_uri=written.obj.uri, object_key=key,
        message=truncation_words(_with_counts(provisional, written.rows, matched, truncated)))
    if done is None:  # cancelled at the last moment: the committed file goes too
        with open_store(object_store, settings) as store:
            _forget(state, store, export, key)
        return BatchOutcome(_acknowledge(state, export, "cancelled as it finished; the file was deleted"),
                            seconds)
    log(f"batch export {export.id}: {written.rows:,} rows, {written.obj.size:,} bytes in {seconds:.1f} s -> "
        f"{written.obj.uri}")
    return BatchOutcome(done, seconds, link)


def _write(clickhouse, store, export: BatchExport, query: BatchQuery, key: str, expected_rows: int, tags: dict,
           stop: threading.Event, engine_settings: dict | None, plan: SlicePlan | None = None) -> ExportedFile:
    """ClickHouse writes the file: one query, or one per time slice of `plan` (two or more), each a part
    of the same file in order."""
    fmt_name = export.format.lower()
    fmt = get_format(fmt_name)
    # Every setting, the query's tags too, in the SELECT's own SETTINGS clause: one clause, which a server
    # reached over HTTP accepts whatever its client appends (a second appended clause breaks some).
    slices = plan.slices if plan is not None and len(plan.slices) > 1 else [None]
    sliced_parquet = not fmt.text and slices[0] is not None
    base = TEXT_SETTINGS if fmt.text else ARROW_SETTINGS if sliced_parquet else PARQUET_SETTINGS
    settings = {**base, **(engine_settings or {}), "log_comment": json.dumps(tags, sort_keys=True)}
    queries = [export_sql(clickhouse.events_table, query, fmt_name, sort_settings=settings, time_slice=s)
               for s in slices]
    counts = [s.rows for s in slices] if slices[0] is not None else [expected_rows]

    def write(i: int, path: str, ch_format: str, compression: str | None) -> None:
        if sliced_parquet:  # one Parquet file from the Arrow blocks of every slice, in order
            if write_parquet(path, (clickhouse.arrow_batches(sql, params, rows_per_batch=PARQUET_ROW_GROUP_ROWS)
                                    for sql, params in queries)):
                return
            # every slice came back empty (rows deleted since they were counted): ClickHouse writes the
            # empty file, schema included
            sql, params = export_sql(clickhouse.events_table, query, fmt_name, sort_settings={
                **PARQUET_SETTINGS, **(engine_settings or {}), "log_comment": settings["log_comment"]})
        else:
            sql, params = queries[i]
        clickhouse.export_to_file(sql, ch_format, path, params, compression=compression)

    expected = max(1, expected_rows * ROW_OVERHEAD_BYTES)  # sizes multipart parts; input/output add more
    if fmt.text:
        files = engine_text_files(store=store, fmt_name=fmt_name, compression=export.compression,
                                  embedded=clickhouse.is_embedded, counts=counts, columns=query.columns,
                                  write=write, key=lambda _n: key, expected=expected, stop=stop)
    else:
        files = engine_parquet_files(store=store, count=1, write=write, key=lambda _n: key, expected=expected,
                                     stop=stop)
    (only,) = files
    return only


def _with_object(export: BatchExport, written: ExportedFile, key: str) -> BatchExport:
    import dataclasses

    return dataclasses.replace(export, object_key=key, object_uri=written.obj.uri, bytes=written.obj.size)


def _with_counts(export: BatchExport, rows: int, matched: int, truncated: bool) -> BatchExport:
    import dataclasses

    return dataclasses.replace(export, rows_written=rows, rows_matched=matched, truncated=truncated)


def _forget(state, store: ObjectStore, export: BatchExport, key: str) -> None:
    """No object under the key and no event_log row for it (object first: a crash in between leaves a row
    for a missing object, never an object without a row)."""
    store.delete_keys([key])
    state.delete_event_log([e.id for e in state.list_event_log(export.project_id, BATCH_EXPORT_ENTITY, export.id)
                            if e.id and e.bucket_path == key])


def _acknowledge(state, export: BatchExport, message: str) -> BatchExport:
    done = state.acknowledge_batch_export_cancel(export.id, message)
    return done or state.get_batch_export(export.id)
