"""StateStore as a Dagster resource: cheap to re-create, usable from an asset, one engine per URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from exports_pipeline.state import StateStore
from exports_pipeline.state.engine import get_engine

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)


def test_instances_share_one_engine(state_database_url: str):
    a, b = StateStore(database_url=state_database_url), StateStore(database_url=state_database_url)
    first = a._engine()
    assert first is b._engine() is get_engine(state_database_url)
    a.finish_window("s", "p", ORIGIN, ORIGIN + timedelta(hours=1), "r", origin=ORIGIN)
    assert b.get_cursor("s", "p").last_sync_at == ORIGIN + timedelta(hours=1)
    a.dispose()
    assert b._engine() is not first, "dispose drops the cached engine; the next call reconnects"
    assert b.get_cursor("s", "p").last_sync_at == ORIGIN + timedelta(hours=1)
    b.dispose()


def test_resource_inside_a_dagster_run(state_database_url: str):
    @dg.asset
    def finish_one_window(state: StateStore) -> dg.MaterializeResult:
        cursor = state.finish_window("object_storage:hourly", "p1", ORIGIN, ORIGIN + timedelta(hours=1), "run",
                                     origin=ORIGIN)
        return dg.MaterializeResult(metadata={"cursor": cursor.last_sync_at.isoformat()})

    result = dg.materialize([finish_one_window], resources={"state": StateStore(database_url=state_database_url)})
    assert result.success
    [mat] = result.asset_materializations_for_node("finish_one_window")
    assert mat.metadata["cursor"].value == "2024-01-01T01:00:00+00:00"
    store = StateStore(database_url=state_database_url)
    assert store.get_cursor("object_storage:hourly", "p1").last_sync_at == ORIGIN + timedelta(hours=1)
    store.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url: str):
    with pytest.raises(ValueError, match="database_url"):
        StateStore(database_url=url).get_cursor("s", "p")
