"""Shared plumbing for the StateStore mixins: the migrated engine and the two kinds of transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

from exports_pipeline.state.engine import read_tx, write_tx
from exports_pipeline.state.migrate import ensure_schema


class StoreBase:
    """Mixins see the resource's `database_url` through this; no fields here (pydantic owns those)."""

    def _engine(self) -> sa.Engine:
        return ensure_schema(self.database_url)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with read_tx(self._engine()) as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with write_tx(self._engine()) as conn:
            yield conn
