"""Integration rows for the three sinks: one generic implementation, thin typed methods per kind.

Semantics follow Langfuse's `upsertBlobStorageIntegration` where it has them: created_at survives updates;
a change of export mode or start date restarts the export (last_sync_at cleared, next_sync_at now, and
every object-storage cursor of the project and its finished windows forgotten in the same transaction); saving an enabled integration
clears the failure-notification cooldown and the running marker; an omitted secret keeps the stored one
as long as an access key id is still given. Encrypted columns are stored as given and never logged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from exports_pipeline.state import tables as t
from exports_pipeline.state.base import StoreBase
from exports_pipeline.state.cursors import delete_cursor_family
from exports_pipeline.state.models import (
    FREQUENCIES,
    SINK_BLOB,
    SINK_MIXPANEL,
    SINK_POSTHOG,
    BlobIntegration,
    MixpanelIntegration,
    PostHogIntegration,
    check_aware,
    check_choice,
    check_text,
    error_text,
    utcnow,
)

M = TypeVar("M")

# Owned by the store: never taken from an upsert's input.
STATE_FIELDS = frozenset({"next_sync_at", "last_sync_at", "run_started_at", "last_error", "last_error_at",
                          "last_failure_notification_sent_at", "created_at", "updated_at"})


@dataclass(frozen=True)
class _Kind(Generic[M]):
    table: sa.Table
    model: type[M]
    sink: str
    on_save: Callable[[sa.Connection, dict[str, Any], dict[str, Any] | None, datetime], None] | None = None

    def to_model(self, row: sa.RowMapping) -> M:
        names = {f.name for f in dataclasses.fields(self.model)}  # type: ignore[arg-type]
        return self.model(**{k: v for k, v in row.items() if k in names})

    def config_values(self, item: M) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self.model):  # type: ignore[arg-type]
            if f.name in STATE_FIELDS:
                continue
            value = getattr(item, f.name)
            values[f.name] = list(value) if isinstance(value, tuple) else value
        return values


def _blob_on_save(conn: sa.Connection, values: dict[str, Any], existing: dict[str, Any] | None,
                  now: datetime) -> None:
    values["compressed"] = values["compression"] != "none"
    values["run_started_at"] = None
    if values["enabled"]:
        values["last_failure_notification_sent_at"] = None
    if values["export_mode"] == "FROM_TODAY" and values["export_start_date"] is None:
        same_mode = existing is not None and existing["export_mode"] == "FROM_TODAY"
        values["export_start_date"] = existing["export_start_date"] if same_mode else now
    if existing is None:
        return
    if values["secret_access_key"] is None and values["access_key_id"] is not None:
        values["secret_access_key"] = existing["secret_access_key"]
    if (values["export_mode"], values["export_start_date"]) != (existing["export_mode"],
                                                               existing["export_start_date"]):
        values["last_sync_at"] = None
        values["next_sync_at"] = now
        delete_cursor_family(conn, SINK_BLOB, values["project_id"])
    elif values["enabled"] and existing["last_error"]:
        values["next_sync_at"] = now


BLOB = _Kind(t.blob_storage_integrations, BlobIntegration, SINK_BLOB, _blob_on_save)
POSTHOG = _Kind(t.posthog_integrations, PostHogIntegration, SINK_POSTHOG)
MIXPANEL = _Kind(t.mixpanel_integrations, MixpanelIntegration, SINK_MIXPANEL)


class IntegrationsMixin(StoreBase):
    # ------------------------------------------------------------------------------------------ generic

    def _get(self, kind: _Kind[M], project_id: str) -> M | None:
        check_text("project_id", project_id)
        with self._read() as conn:
            row = conn.execute(sa.select(kind.table).where(kind.table.c.project_id == project_id)).mappings().first()
        return kind.to_model(row) if row else None

    def _list(self, kind: _Kind[M], enabled: bool | None, **filters: Any) -> list[M]:
        query = sa.select(kind.table).order_by(kind.table.c.project_id)
        if enabled is not None:
            if not isinstance(enabled, bool):
                raise ValueError("enabled must be a bool or None")
            query = query.where(kind.table.c.enabled == enabled)
        for name, value in filters.items():
            if value is not None:
                query = query.where(kind.table.c[name] == value)
        with self._read() as conn:
            return [kind.to_model(r) for r in conn.execute(query).mappings()]

    def _upsert(self, kind: _Kind[M], item: M) -> M:
        if not isinstance(item, kind.model):
            raise ValueError(f"integration must be a {kind.model.__name__}")
        table, now = kind.table, utcnow()
        values = kind.config_values(item)
        pid = values["project_id"]
        with self._write() as conn:
            found = conn.execute(sa.select(table).where(table.c.project_id == pid).with_for_update()).mappings().first()
            existing = dict(found) if found else None
            if kind.on_save:
                kind.on_save(conn, values, existing, now)
            if existing is None:
                conn.execute(sa.insert(table).values(**values, created_at=now, updated_at=now))
            else:
                conn.execute(sa.update(table).where(table.c.project_id == pid).values(**values, updated_at=now))
            row = conn.execute(sa.select(table).where(table.c.project_id == pid)).mappings().one()
        return kind.to_model(row)

    def _update(self, kind: _Kind[M], project_id: str, **values: Any) -> M | None:
        """Set columns on one row and return it, or None when the project has no such integration."""
        check_text("project_id", project_id)
        table = kind.table
        with self._write() as conn:
            done = conn.execute(
                sa.update(table).where(table.c.project_id == project_id).values(**values, updated_at=utcnow())
            )
            if done.rowcount == 0:
                return None
            row = conn.execute(sa.select(table).where(table.c.project_id == project_id)).mappings().one()
        return kind.to_model(row)

    def _disable(self, kind: _Kind[M], project_id: str, error: str | None) -> M | None:
        values: dict[str, Any] = {"enabled": False}
        if error is not None:
            values.update(last_error=error_text("error", error), last_error_at=utcnow())
        return self._update(kind, project_id, **values)

    def _record_error(self, kind: _Kind[M], project_id: str, error: str) -> M | None:
        return self._update(kind, project_id, last_error=error_text("error", error), last_error_at=utcnow())

    def _mark_synced(self, kind: _Kind[M], project_id: str, last_sync_at: datetime) -> M | None:
        check_aware("last_sync_at", last_sync_at, required=True)
        return self._update(kind, project_id, last_sync_at=last_sync_at, last_error=None, last_error_at=None)

    def _delete(self, kind: _Kind[M], project_id: str) -> bool:
        """Also forgets the sink's cursor, so a re-created integration starts over as in Langfuse."""
        check_text("project_id", project_id)
        with self._write() as conn:
            done = conn.execute(sa.delete(kind.table).where(kind.table.c.project_id == project_id))
            delete_cursor_family(conn, kind.sink, project_id)
        return done.rowcount > 0

    # ------------------------------------------------------------------------------------ blob storage

    def get_blob_integration(self, project_id: str) -> BlobIntegration | None:
        return self._get(BLOB, project_id)

    def list_blob_integrations(self, enabled: bool | None = None, frequency: str | None = None
                               ) -> list[BlobIntegration]:
        check_choice("frequency", frequency, FREQUENCIES, optional=True)
        return self._list(BLOB, enabled, export_frequency=frequency)

    def upsert_blob_integration(self, integration: BlobIntegration) -> BlobIntegration:
        return self._upsert(BLOB, integration)

    def disable_blob_integration(self, project_id: str, error: str | None = None) -> BlobIntegration | None:
        return self._disable(BLOB, project_id, error)

    def enable_blob_integration(self, project_id: str) -> BlobIntegration | None:
        """Re-enable after the customer fixed the cause: the recorded error is cleared with it."""
        return self._update(BLOB, project_id, enabled=True, last_error=None, last_error_at=None,
                            last_failure_notification_sent_at=None)

    def delete_blob_integration(self, project_id: str) -> bool:
        return self._delete(BLOB, project_id)

    def record_blob_error(self, project_id: str, error: str) -> BlobIntegration | None:
        return self._record_error(BLOB, project_id, error)

    def mark_blob_run_started(self, project_id: str) -> BlobIntegration | None:
        return self._update(BLOB, project_id, run_started_at=utcnow())

    def mark_blob_run_finished(
        self,
        project_id: str,
        *,
        last_sync_at: datetime | None = None,
        next_sync_at: datetime | None = None,
        error: str | None = None,
    ) -> BlobIntegration | None:
        """Clear the running marker; success clears the error and may move last_sync_at/next_sync_at."""
        check_aware("last_sync_at", last_sync_at)
        check_aware("next_sync_at", next_sync_at)
        values: dict[str, Any] = {"run_started_at": None}
        if error is not None:
            values.update(last_error=error_text("error", error), last_error_at=utcnow())
        else:
            values.update(last_error=None, last_error_at=None)
        if last_sync_at is not None:
            values["last_sync_at"] = last_sync_at
        if next_sync_at is not None:
            values["next_sync_at"] = next_sync_at
        return self._update(BLOB, project_id, **values)

    # ---------------------------------------------------------------------------------------- PostHog

    def get_posthog_integration(self, project_id: str) -> PostHogIntegration | None:
        return self._get(POSTHOG, project_id)

    def list_posthog_integrations(self, enabled: bool | None = None) -> list[PostHogIntegration]:
        return self._list(POSTHOG, enabled)

    def upsert_posthog_integration(self, integration: PostHogIntegration) -> PostHogIntegration:
        return self._upsert(POSTHOG, integration)

    def disable_posthog_integration(self, project_id: str, error: str | None = None) -> PostHogIntegration | None:
        return self._disable(POSTHOG, project_id, error)

    def enable_posthog_integration(self, project_id: str) -> PostHogIntegration | None:
        """Re-enable after the customer fixed the cause: the recorded error is cleared with it."""
        return self._update(POSTHOG, project_id, enabled=True, last_error=None, last_error_at=None)

    def delete_posthog_integration(self, project_id: str) -> bool:
        return self._delete(POSTHOG, project_id)

    def record_posthog_error(self, project_id: str, error: str) -> PostHogIntegration | None:
        return self._record_error(POSTHOG, project_id, error)

    def mark_posthog_synced(self, project_id: str, last_sync_at: datetime) -> PostHogIntegration | None:
        return self._mark_synced(POSTHOG, project_id, last_sync_at)

    # --------------------------------------------------------------------------------------- Mixpanel

    def get_mixpanel_integration(self, project_id: str) -> MixpanelIntegration | None:
        return self._get(MIXPANEL, project_id)

    def list_mixpanel_integrations(self, enabled: bool | None = None) -> list[MixpanelIntegration]:
        return self._list(MIXPANEL, enabled)

    def upsert_mixpanel_integration(self, integration: MixpanelIntegration) -> MixpanelIntegration:
        return self._upsert(MIXPANEL, integration)

    def disable_mixpanel_integration(self, project_id: str, error: str | None = None
                                     ) -> MixpanelIntegration | None:
        return self._disable(MIXPANEL, project_id, error)

    def enable_mixpanel_integration(self, project_id: str) -> MixpanelIntegration | None:
        """Re-enable after the customer fixed the cause: the recorded error is cleared with it."""
        return self._update(MIXPANEL, project_id, enabled=True, last_error=None, last_error_at=None)

    def delete_mixpanel_integration(self, project_id: str) -> bool:
        return self._delete(MIXPANEL, project_id)

    def record_mixpanel_error(self, project_id: str, error: str) -> MixpanelIntegration | None:
        return self._record_error(MIXPANEL, project_id, error)

    def mark_mixpanel_synced(self, project_id: str, last_sync_at: datetime) -> MixpanelIntegration | None:
        return self._mark_synced(MIXPANEL, project_id, last_sync_at)
