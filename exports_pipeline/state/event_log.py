"""`event_log`: one row per object written, keyed by (endpoint, bucket_name, bucket_path) so re-runs update
in place.

Exports write a row *before* the object is committed (`claim_event_log`), so every object that can exist
is findable here even if the process dies right after the commit; a row may therefore name an object
that never came to be, which deleting tolerates. A claim refuses keys another partition owns: whatever a
key template renders, one partition never overwrites or adopts another's object.

Upserts use the dialect's native `INSERT ... ON CONFLICT DO UPDATE` (SQLite and PostgreSQL share the
syntax), one statement per chunk. A statement may not touch the same conflict key twice on PostgreSQL, so
a batch is de-duplicated first (last entry wins, as if applied in order).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exports_pipeline.state import tables as t
from exports_pipeline.state.base import StoreBase
from exports_pipeline.state.models import EventLogEntry, check_text, utcnow

# 13 bound values per row; SQLite allows 32,766 variables per statement.
CHUNK_ROWS = 1000
_UPDATED = ("project_id", "entity_type", "entity_id", "event_id", "trace_id", "region", "prefix", "updated_at")
_KEY = ("endpoint", "bucket_name", "bucket_path")


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_entry(row: sa.RowMapping) -> EventLogEntry:
    return EventLogEntry(**dict(row))


class EventLogMixin(StoreBase):
    def upsert_event_log(self, entries: Sequence[EventLogEntry]) -> int:
        """Record objects written; returns the number of distinct places upserted."""
        latest = _latest(entries)
        if not latest:
            return 0
        with self._write() as conn:
            _upsert(conn, latest)
        return len(latest)

    def claim_event_log(self, entries: Sequence[EventLogEntry]) -> list[EventLogEntry]:
        """Record objects about to be written, unless another partition owns one of their places.

        Returns the conflicting rows (their owners' entries) and writes nothing if there are any; else
        upserts all and returns []. One transaction, so two claims cannot both win a place.
        """
        latest = _latest(entries)
        if not latest:
            return []
        c = t.event_log.c
        with self._write() as conn:
            taken: list[EventLogEntry] = []
            for chunk in _chunks(list(latest.values()), CHUNK_ROWS // 3):
                keys = sa.tuple_(c.endpoint, c.bucket_name, c.bucket_path).in_([e.place for e in chunk])
                for row in conn.execute(sa.select(t.event_log).where(keys)).mappings():
                    owner = _to_entry(row)
                    if owner.owner != latest[owner.place].owner:
                        taken.append(owner)
            if taken:
                return taken
            _upsert(conn, latest)
        return []

    def list_event_log(self, project_id: str, entity_type: str | None = None, entity_id: str | None = None
                       ) -> list[EventLogEntry]:
        check_text("project_id", project_id)
        check_text("entity_type", entity_type, optional=True)
        check_text("entity_id", entity_id, optional=True)
        c = t.event_log.c
        query = sa.select(t.event_log).where(c.project_id == project_id)
        if entity_type is not None:
            query = query.where(c.entity_type == entity_type)
        if entity_id is not None:
            query = query.where(c.entity_id == entity_id)
        query = query.order_by(c.endpoint, c.bucket_name, c.bucket_path)
        with self._read() as conn:
            return [_to_entry(r) for r in conn.execute(query).mappings()]

    def delete_event_log(self, ids: Sequence[str]) -> int:
        """Forget rows by id (after their objects were deleted); returns rows removed."""
        ids = list(dict.fromkeys(ids))
        for i in ids:
            check_text("ids", i)
        removed = 0
        with self._write() as conn:
            for chunk in _chunks(ids, CHUNK_ROWS):
                removed += conn.execute(sa.delete(t.event_log).where(t.event_log.c.id.in_(chunk))).rowcount
        return removed

    def delete_project_event_log(self, project_id: str, entity_type: str | None = None) -> int:
        check_text("project_id", project_id)
        check_text("entity_type", entity_type, optional=True)
        c = t.event_log.c
        stmt = sa.delete(t.event_log).where(c.project_id == project_id)
        if entity_type is not None:
            stmt = stmt.where(c.entity_type == entity_type)
        with self._write() as conn:
            return conn.execute(stmt).rowcount


def _latest(entries: Sequence[EventLogEntry]) -> dict[tuple[str, str, str], EventLogEntry]:
    """One entry per place, the last one winning (as if applied in order): PostgreSQL refuses a statement
    that touches one conflict key twice."""
    latest: dict[tuple[str, str, str], EventLogEntry] = {}
    for entry in entries:
        if not isinstance(entry, EventLogEntry):
            raise ValueError("entries must be EventLogEntry values")
        latest[entry.place] = entry
    return latest


def _upsert(conn: sa.Connection, latest: dict[tuple[str, str, str], EventLogEntry]) -> None:
    now = utcnow()
    rows = [
        {
            "id": e.id or uuid.uuid4().hex, "bucket_name": e.bucket_name, "bucket_path": e.bucket_path,
            "project_id": e.project_id, "entity_type": e.entity_type, "entity_id": e.entity_id,
            "event_id": e.event_id, "trace_id": e.trace_id, "endpoint": e.endpoint, "region": e.region,
            "prefix": e.prefix, "created_at": now, "updated_at": now,
        }
        for e in latest.values()
    ]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for chunk in _chunks(rows, CHUNK_ROWS):
        stmt = dialect.insert(t.event_log).values(list(chunk))
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.event_log.c[name] for name in _KEY],
            set_={name: stmt.excluded[name] for name in _UPDATED},
        )
        conn.execute(stmt)
