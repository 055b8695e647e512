"""`batch_exports`: on-demand download requests and their status, as in Langfuse (§2.1), plus what a run did.

Every status change is a conditional UPDATE (`... WHERE status IN (allowed)`): the database decides which
of two racing workers wins, with no lock held across the export itself. A transition that is not allowed
from the current status returns None rather than raising, because losing a race is a normal outcome.

Allowed: QUEUED→PROCESSING (claim; again by the same run, so a step retry carries on with its row),
PROCESSING→COMPLETED (only while no cancel was requested), QUEUED|PROCESSING→FAILED (Langfuse fails stale
QUEUED rows too), QUEUED→CANCELLED, and PROCESSING→CANCELLED once a cancel was requested (the run that
owns the row acknowledges it after aborting its upload).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from exports_pipeline.state import tables as t
from exports_pipeline.state.base import StoreBase
from exports_pipeline.state.models import (
    BATCH_FORMATS,
    BATCH_STATUSES,
    COMPRESSIONS,
    BatchExport,
    check_aware,
    check_choice,
    check_text,
    error_text,
    utcnow,
)


def _now() -> sa.ColumnElement:
    """Now as a typed literal, so it binds through UTCDateTime inside SQL expressions too."""
    return sa.literal(utcnow(), t.UTCDateTime())


def _to_model(row: sa.RowMapping) -> BatchExport:
    return BatchExport(**dict(row))


class BatchExportsMixin(StoreBase):
    def create_batch_export(self, project_id: str, user_id: str, name: str, query: dict[str, Any],
                            format: str, *, compression: str = "none", email: str | None = None,
                            claimed_by_run: str | None = None, created_at: datetime | None = None) -> BatchExport:
        """A QUEUED request; or, with `claimed_by_run`, one that run already owns (a launchpad run that
        describes its own request: no sensor may launch it a second time). `created_at` is the data
        cutoff the caller already put in `query` (default: now)."""
        check_text("project_id", project_id)
        check_text("user_id", user_id)
        check_text("name", name)
        check_choice("format", format, BATCH_FORMATS)
        check_choice("compression", compression, COMPRESSIONS)
        check_text("email", email, optional=True)
        check_text("claimed_by_run", claimed_by_run, optional=True)
        if not isinstance(query, dict):
            raise ValueError("query must be a JSON object (dict)")
        try:
            json.dumps(query)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"query must be JSON-serializable: {exc}") from None
        check_aware("created_at", created_at)
        now = created_at or utcnow()
        row = {
            "id": uuid.uuid4().hex, "project_id": project_id, "user_id": user_id, "name": name,
            "status": "QUEUED", "query": query, "format": format, "created_at": now, "updated_at": now,
            "compression": compression, "email": email,
        }
        if claimed_by_run:
            row.update(status="PROCESSING", run_id=claimed_by_run, started_at=now)
        with self._write() as conn:
            conn.execute(sa.insert(t.batch_exports).values(**row))
            stored = conn.execute(sa.select(t.batch_exports).where(t.batch_exports.c.id == row["id"])).mappings().one()
        return _to_model(stored)

    def get_batch_export(self, id: str) -> BatchExport | None:
        check_text("id", id)
        with self._read() as conn:
            row = conn.execute(sa.select(t.batch_exports).where(t.batch_exports.c.id == id)).mappings().first()
        return _to_model(row) if row else None

    def list_batch_exports(self, project_id: str | None = None, status: str | None = None, *,
                           finished_before: datetime | None = None, with_file: bool | None = None,
                           run_id: str | None = None) -> list[BatchExport]:
        """Newest first, like Langfuse's listing. `finished_before` and `with_file` (an object exists
        and was not deleted) serve the retention schedule; `run_id` finds the row a run owns."""
        check_text("project_id", project_id, optional=True)
        check_choice("status", status, BATCH_STATUSES, optional=True)
        check_aware("finished_before", finished_before)
        c = t.batch_exports.c
        query = sa.select(t.batch_exports).order_by(c.created_at.desc(), c.id.desc())
        if project_id is not None:
            query = query.where(c.project_id == project_id)
        if status is not None:
            query = query.where(c.status == status)
        if finished_before is not None:
            query = query.where(c.finished_at < finished_before)
        if run_id is not None:
            query = query.where(c.run_id == run_id)
        if with_file is not None:
            has = sa.and_(c.object_key.is_not(None), c.file_deleted_at.is_(None))
            query = query.where(has if with_file else sa.not_(has))
        with self._read() as conn:
            return [_to_model(r) for r in conn.execute(query).mappings()]

    def _transition(self, id: str, allowed_from: Iterable[str], *conditions: Any, **values: Any
                    ) -> BatchExport | None:
        check_text("id", id)
        c = t.batch_exports.c
        with self._write() as conn:
            done = conn.execute(
                sa.update(t.batch_exports)
                .where(c.id == id, c.status.in_(list(allowed_from)), *conditions)
                .values(**values, updated_at=utcnow())
            )
            if done.rowcount != 1:
                return None
            row = conn.execute(sa.select(t.batch_exports).where(c.id == id)).mappings().one()
        return _to_model(row)

    def claim_batch_export(self, id: str, run_id: str | None = None) -> BatchExport | None:
        """QUEUED→PROCESSING for `run_id`; None when the row is missing, cancelled, finished or owned by
        another run. The run that owns a PROCESSING row claims it again (a step retry), so no attempt
        loses the row and no two runs share it."""
        c = t.batch_exports.c
        if run_id is None:
            return self._transition(id, ["QUEUED"], status="PROCESSING", started_at=utcnow())
        check_text("run_id", run_id)
        mine = sa.or_(c.status == "QUEUED", c.run_id == run_id)
        return self._transition(id, ["QUEUED", "PROCESSING"], mine, status="PROCESSING", run_id=run_id,
                                started_at=sa.func.coalesce(c.started_at, _now()))

    def record_batch_export_progress(self, id: str, *, rows_matched: int | None = None,
                                     message: str | None = None) -> BatchExport | None:
        """What a running export knows before it finishes (rows that matched, a retry note)."""
        values: dict[str, Any] = {}
        if rows_matched is not None:
            values["rows_matched"] = int(rows_matched)
        if message is not None:
            values["message"] = error_text("message", message)
        return self._transition(id, ["PROCESSING"], **values)

    def complete_batch_export(self, id: str, url: str, expires_at: datetime, *, rows_written: int | None = None,
                              rows_matched: int | None = None, truncated: bool = False, bytes: int | None = None,
                              object_uri: str | None = None, object_key: str | None = None,
                              message: str | None = None) -> BatchExport | None:
        """PROCESSING→COMPLETED, unless a cancel was requested meanwhile (then None: the caller deletes the
        file it just committed and acknowledges the cancel)."""
        check_text("url", url)
        check_aware("expires_at", expires_at, required=True)
        return self._transition(
            id, ["PROCESSING"], t.batch_exports.c.cancel_requested_at.is_(None),
            status="COMPLETED", url=url, expires_at=expires_at, finished_at=utcnow(), log=None,
            rows_written=rows_written, rows_matched=rows_matched, truncated=bool(truncated), bytes=bytes,
            object_uri=object_uri, object_key=object_key,
            message=error_text("message", message) if message else None)

    def fail_batch_export(self, id: str, log: str) -> BatchExport | None:
        """`log` is shown to the user: pass a readable message, not a traceback."""
        text = error_text("log", log, empty="An internal error occurred")  # Langfuse's generic message
        return self._transition(id, ["QUEUED", "PROCESSING"], status="FAILED", log=text,
                                finished_at=utcnow())

    def cancel_batch_export(self, id: str) -> BatchExport | None:
        """QUEUED→CANCELLED: a queued export never runs. A running one is asked with
        `request_batch_export_cancel` and stops itself."""
        return self._transition(id, ["QUEUED"], status="CANCELLED", finished_at=utcnow())

    def request_batch_export_cancel(self, id: str) -> BatchExport | None:
        """Ask the run that owns a PROCESSING export to stop; it aborts its upload and marks it CANCELLED."""
        c = t.batch_exports.c
        return self._transition(id, ["PROCESSING"], status="PROCESSING",
                                cancel_requested_at=sa.func.coalesce(c.cancel_requested_at, _now()))

    def acknowledge_batch_export_cancel(self, id: str, message: str | None = None) -> BatchExport | None:
        """PROCESSING→CANCELLED after the run stopped and left nothing behind."""
        return self._transition(id, ["PROCESSING"], status="CANCELLED", finished_at=utcnow(),
                                message=error_text("message", message) if message else None)

    def add_batch_export_message(self, id: str, message: str) -> BatchExport | None:
        """Append a note to a finished export (a mail that could not be sent, the file's deletion)."""
        c = t.batch_exports.c
        note = error_text("message", message)
        joined = sa.case((c.message.is_(None), note), else_=c.message + sa.literal("\n") + note)
        return self._transition(id, BATCH_STATUSES, message=sa.func.substr(joined, 1, 1000))

    def mark_batch_export_file_deleted(self, id: str, message: str) -> BatchExport | None:
        """The retention schedule deleted the file: the link is gone with it."""
        self._transition(id, ["COMPLETED"], file_deleted_at=utcnow(), url=None)
        return self.add_batch_export_message(id, message)
