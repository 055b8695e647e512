"""`batch_exports`: on-demand download requests and their status, as in Langfuse (§2.1).

Every status change is a conditional UPDATE (`... WHERE status IN (allowed)`): the database decides which
of two racing workers wins, with no lock held across the export itself. A transition that is not allowed
from the current status returns None rather than raising, because losing a race is a normal outcome.

Allowed: QUEUED→PROCESSING (claim), PROCESSING→COMPLETED, QUEUED|PROCESSING→FAILED (Langfuse fails
stale QUEUED rows too), QUEUED→CANCELLED.
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
    BatchExport,
    check_aware,
    check_choice,
    check_text,
    error_text,
    utcnow,
)


def _to_model(row: sa.RowMapping) -> BatchExport:
    return BatchExport(**dict(row))


class BatchExportsMixin(StoreBase):
    def create_batch_export(self, project_id: str, user_id: str, name: str, query: dict[str, Any],
                            format: str) -> BatchExport:
        check_text("project_id", project_id)
        check_text("user_id", user_id)
        check_text("name", name)
        check_choice("format", format, BATCH_FORMATS)
        if not isinstance(query, dict):
            raise ValueError("query must be a JSON object (dict)")
        try:
            json.dumps(query)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"query must be JSON-serializable: {exc}") from None
        now = utcnow()
        row = {
            "id": uuid.uuid4().hex, "project_id": project_id, "user_id": user_id, "name": name,
            "status": "QUEUED", "query": query, "format": format, "created_at": now, "updated_at": now,
        }
        with self._write() as conn:
            conn.execute(sa.insert(t.batch_exports).values(**row))
            stored = conn.execute(sa.select(t.batch_exports).where(t.batch_exports.c.id == row["id"])).mappings().one()
        return _to_model(stored)

    def get_batch_export(self, id: str) -> BatchExport | None:
        check_text("id", id)
        with self._read() as conn:
            row = conn.execute(sa.select(t.batch_exports).where(t.batch_exports.c.id == id)).mappings().first()
        return _to_model(row) if row else None

    def list_batch_exports(self, project_id: str | None = None, status: str | None = None) -> list[BatchExport]:
        """Newest first, like Langfuse's listing."""
        check_text("project_id", project_id, optional=True)
        check_choice("status", status, BATCH_STATUSES, optional=True)
        c = t.batch_exports.c
        query = sa.select(t.batch_exports).order_by(c.created_at.desc(), c.id.desc())
        if project_id is not None:
            query = query.where(c.project_id == project_id)
        if status is not None:
            query = query.where(c.status == status)
        with self._read() as conn:
            return [_to_model(r) for r in conn.execute(query).mappings()]

    def _transition(self, id: str, allowed_from: Iterable[str], **values: Any) -> BatchExport | None:
        check_text("id", id)
        c = t.batch_exports.c
        with self._write() as conn:
            done = conn.execute(
                sa.update(t.batch_exports)
                .where(c.id == id, c.status.in_(list(allowed_from)))
                .values(**values, updated_at=utcnow())
            )
            if done.rowcount != 1:
                return None
            row = conn.execute(sa.select(t.batch_exports).where(c.id == id)).mappings().one()
        return _to_model(row)

    def claim_batch_export(self, id: str) -> BatchExport | None:
        """QUEUED→PROCESSING; None when the row is missing or someone else already took it."""
        return self._transition(id, ["QUEUED"], status="PROCESSING")

    def complete_batch_export(self, id: str, url: str, expires_at: datetime) -> BatchExport | None:
        check_text("url", url)
        check_aware("expires_at", expires_at, required=True)
        return self._transition(id, ["PROCESSING"], status="COMPLETED", url=url, expires_at=expires_at,
                                finished_at=utcnow(), log=None)

    def fail_batch_export(self, id: str, log: str) -> BatchExport | None:
        """`log` is shown to the user: pass a readable message, not a traceback."""
        text = error_text("log", log, empty="An internal error occurred")  # Langfuse's generic message
        return self._transition(id, ["QUEUED", "PROCESSING"], status="FAILED", log=text,
                                finished_at=utcnow())

    def cancel_batch_export(self, id: str) -> BatchExport | None:
        """Only before a worker claimed it, as in Langfuse: a running export is not interrupted."""
        return self._transition(id, ["QUEUED"], status="CANCELLED", finished_at=utcnow())
