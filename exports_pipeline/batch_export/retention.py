"""Export files older than `EXPORTS_BATCH_EXPORT_RETENTION_DAYS` are deleted, and their event_log rows.

The daily schedule `batch_export_retention_schedule` runs this; 0 days keeps every file. What to delete
comes from `event_log` (entity `batch_export`), so a file is found wherever it was recorded; objects go
first and their rows after, so a crash in between leaves rows for missing objects, never the reverse.
A row recorded in another bucket (the destination changed since) is left alone with a warning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from exports_pipeline.batch_export.runner import open_store
from exports_pipeline.settings import BatchExportSettings
from exports_pipeline.state.models import BATCH_EXPORT_ENTITY, utcnow


@dataclass
class Purged:
    exports: list[str] = field(default_factory=list)
    objects: int = 0
    skipped: list[str] = field(default_factory=list)


def purge_expired_files(state, object_store, settings: BatchExportSettings, now: dt.datetime | None = None,
                        log: Callable[[str], None] = lambda _m: None) -> Purged:
    out = Purged()
    if not settings.retention_days:
        log("EXPORTS_BATCH_EXPORT_RETENTION_DAYS is 0: export files are kept")
        return out
    cutoff = (now or utcnow()) - dt.timedelta(days=settings.retention_days)
    due = state.list_batch_exports(status="COMPLETED", finished_before=cutoff, with_file=True)
    if not due:
        return out
    with open_store(object_store, settings) as store:
        bucket = store.destination.bucket
        for export in due:
            entries = state.list_event_log(export.project_id, BATCH_EXPORT_ENTITY, export.id)
            mine = [e for e in entries if e.bucket_name == bucket]
            if len(mine) != len(entries):
                out.skipped.append(export.id)
                log(f"batch export {export.id}: {len(entries) - len(mine)} file(s) were written to another "
                    f"bucket than {store.destination.url}; left alone")
                continue
            store.delete_keys([e.bucket_path for e in mine])
            state.delete_event_log([e.id for e in mine if e.id])
            state.mark_batch_export_file_deleted(
                export.id, f"the file was deleted {settings.retention_days} days after the export finished "
                "(EXPORTS_BATCH_EXPORT_RETENTION_DAYS)")
            out.exports.append(export.id)
            out.objects += len(mine)
    log(f"deleted {out.objects} file(s) of {len(out.exports)} batch export(s) finished before {cutoff:%Y-%m-%d %H:%M}Z")
    return out
