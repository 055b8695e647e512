"""Sync cursors that advance only over a gap-free run of finished windows.

Dagster may finish partitions in any order (backfills, retries, ad hoc launches). A cursor that jumped to
the end of whichever window finished last would claim data as delivered that never was. So each finished
window is recorded, and the cursor moves from where it is across recorded windows that cover it, stopping
at the first gap. "Cover" (start <= cursor < end) rather than "start exactly at the cursor" keeps the cursor
moving when window sizes change under it (an hourly integration switched to daily), and is equally sound:
a finished window delivered everything in [start, end).

Concurrency: the cursor row is created if missing (insert-or-ignore) and then locked (`FOR UPDATE` on
PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the single write lock), so two runs finishing
different windows at once serialize and the second sees the first's window.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exports_pipeline.state import tables as t
from exports_pipeline.state.base import StoreBase
from exports_pipeline.state.models import Cursor, check_aware, check_text, error_text, utcnow


def _insert(conn: sa.Connection, table: sa.Table):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _key(table: sa.Table, sink: str, project_id: str):
    return sa.and_(table.c.sink == sink, table.c.project_id == project_id)


def _ensure_row(conn: sa.Connection, sink: str, project_id: str, last_sync_at: datetime | None,
                now: datetime) -> None:
    stmt = _insert(conn, t.sync_cursors).values(
        sink=sink, project_id=project_id, last_sync_at=last_sync_at, updated_at=now
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["sink", "project_id"]))


def _load(conn: sa.Connection, sink: str, project_id: str, *, lock: bool = False) -> Cursor | None:
    query = sa.select(t.sync_cursors).where(_key(t.sync_cursors, sink, project_id))
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return Cursor(**dict(row)) if row else None


def delete_cursor_rows(conn: sa.Connection, sink: str, project_id: str) -> None:
    for table in (t.sync_cursors, t.sync_windows):
        conn.execute(sa.delete(table).where(_key(table, sink, project_id)))


def delete_cursor_family(conn: sa.Connection, family: str, project_id: str) -> None:
    """Forget the sink `family` and every "family:<qualifier>" sink of one project."""
    for table in (t.sync_cursors, t.sync_windows):
        in_family = sa.or_(table.c.sink == family, table.c.sink.startswith(f"{family}:", autoescape=True))
        conn.execute(sa.delete(table).where(in_family, table.c.project_id == project_id))


class CursorsMixin(StoreBase):
    def get_cursor(self, sink: str, project_id: str) -> Cursor | None:
        check_text("sink", sink)
        check_text("project_id", project_id)
        with self._read() as conn:
            return _load(conn, sink, project_id)

    def finish_window(
        self,
        sink: str,
        project_id: str,
        window_start: datetime,
        window_end: datetime,
        run_id: str | None,
        origin: datetime,
        rows: int | None = None,
        max_event_ts: str | None = None,
    ) -> Cursor:
        """Record [window_start, window_end) as delivered and advance the cursor as far as it is gap-free.

        `origin` is where delivery starts for this integration; it only matters when the cursor has no
        position yet. Finishing the same window again is harmless (its row is updated in place).
        """
        check_text("sink", sink)
        check_text("project_id", project_id)
        check_aware("window_start", window_start, required=True)
        check_aware("window_end", window_end, required=True)
        check_aware("origin", origin, required=True)
        check_text("run_id", run_id, optional=True)
        if window_end <= window_start:
            raise ValueError("window_end must be after window_start")
        now = utcnow()
        with self._write() as conn:
            _ensure_row(conn, sink, project_id, origin, now)
            cursor = _load(conn, sink, project_id, lock=True)
            assert cursor is not None
            stmt = _insert(conn, t.sync_windows).values(
                sink=sink, project_id=project_id, window_start=window_start, window_end=window_end,
                run_id=run_id, finished_at=now, row_count=rows, max_event_ts=max_event_ts,
            )
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["sink", "project_id", "window_start"],
                set_={"window_end": stmt.excluded.window_end, "run_id": stmt.excluded.run_id,
                      "finished_at": stmt.excluded.finished_at, "row_count": stmt.excluded.row_count,
                      "max_event_ts": stmt.excluded.max_event_ts},
            ))
            position = cursor.last_sync_at or origin
            w = t.sync_windows.c
            windows = conn.execute(
                sa.select(w.window_start, w.window_end)
                .where(_key(t.sync_windows, sink, project_id), w.window_end > position)
                .order_by(w.window_start)
            ).all()
            for start, end in windows:
                if start > position:
                    break
                position = max(position, end)
            conn.execute(
                sa.update(t.sync_cursors).where(_key(t.sync_cursors, sink, project_id)).values(
                    last_sync_at=position, last_run_id=run_id, last_error=None, last_error_at=None,
                    updated_at=now,
                )
            )
            result = _load(conn, sink, project_id)
        assert result is not None
        return result

    def record_cursor_error(self, sink: str, project_id: str, error: str) -> Cursor:
        """Remember why the last attempt failed; the position is untouched (created empty if needed)."""
        check_text("sink", sink)
        check_text("project_id", project_id)
        text = error_text("error", error)
        now = utcnow()
        with self._write() as conn:
            _ensure_row(conn, sink, project_id, None, now)
            conn.execute(
                sa.update(t.sync_cursors).where(_key(t.sync_cursors, sink, project_id)).values(
                    last_error=text, last_error_at=now, updated_at=now,
                )
            )
            result = _load(conn, sink, project_id)
        assert result is not None
        return result

    def reset_cursor(self, sink: str, project_id: str) -> None:
        """Forget the position and every finished window (an integration's start moved)."""
        check_text("sink", sink)
        check_text("project_id", project_id)
        with self._write() as conn:
            delete_cursor_rows(conn, sink, project_id)

    def list_finished_windows(self, sink: str, project_id: str) -> list[tuple[datetime, datetime]]:
        """Finished [start, end) windows, oldest first (what the late-rows sensor re-checks)."""
        check_text("sink", sink)
        check_text("project_id", project_id)
        w = t.sync_windows.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(w.window_start, w.window_end)
                .where(_key(t.sync_windows, sink, project_id))
                .order_by(w.window_start)
            ).all()
        return [(start, end) for start, end in rows]

    # ------------------------------------------------------------------ delivery records (API sinks)

    def finished_pieces(self, sink: str, project_id: str, start: datetime, end: datetime
                        ) -> list[tuple[datetime, datetime, int | None, str | None]]:
        """Finished windows starting in [start, end): (start, end, rows, max_event_ts), oldest first."""
        check_text("sink", sink)
        check_text("project_id", project_id)
        w = t.sync_windows.c
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(w.window_start, w.window_end, w.row_count, w.max_event_ts)
                .where(_key(t.sync_windows, sink, project_id), w.window_start >= start, w.window_start < end)
                .order_by(w.window_start)
            ).all()]

    def forget_pieces(self, sink: str, project_id: str, start: datetime, end: datetime) -> int:
        """Drop the delivery records of windows starting in [start, end) before the span is delivered
        whole again (the cursor's position stays: the span is delivered, only its record is renewed)."""
        check_text("sink", sink)
        check_text("project_id", project_id)
        w = t.sync_windows.c
        with self._write() as conn:
            return conn.execute(sa.delete(t.sync_windows).where(
                _key(t.sync_windows, sink, project_id), w.window_start >= start, w.window_start < end)).rowcount

    def delivered_states(self, sink: str, project_id: str, windows) -> dict:
        """For each window (with .start/.end) delivered without a gap from its start to its end: the sum of
        its pieces' rows and their latest max_event_ts, as an engine `WindowState` (start -> state)."""
        from exports_pipeline.engine.sink import WindowState

        out = {}
        for window in windows:
            pieces = self.finished_pieces(sink, project_id, window.start, window.end)
            position, rows, latest = window.start, 0, None
            for start, end, count, max_ts in pieces:
                if start > position or count is None:
                    break
                position, rows = max(position, end), rows + count
                latest = max(latest, max_ts) if latest and max_ts else (latest or max_ts)
            if pieces and position >= window.end:
                out[window.start] = WindowState(rows, latest)
        return out
