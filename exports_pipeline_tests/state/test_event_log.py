"""event_log upserts on (bucket_name, bucket_path) and never crosses project boundaries."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from exports_pipeline.state import EventLogEntry, StateStore


def entry(path: str, project: str = "p1", event_id: str = "e1", entity_type: str = "window",
          entity_id: str = "2024-01-01T00", **kw) -> EventLogEntry:
    return EventLogEntry(bucket_name="bkt", bucket_path=path, project_id=project, entity_type=entity_type,
                         entity_id=entity_id, event_id=event_id, **kw)


def test_same_key_twice_is_one_updated_row(store: StateStore):
    assert store.upsert_event_log([entry("p1/a.parquet", event_id="run-1", trace_id="t1")]) == 1
    [first] = store.list_event_log("p1")
    assert first.event_id == "run-1" and first.trace_id == "t1"
    assert first.id and first.created_at.tzinfo == UTC and first.updated_at == first.created_at
    time.sleep(0.01)

    store.upsert_event_log([entry("p1/a.parquet", event_id="run-2", trace_id=None, entity_id="other")])
    [second] = store.list_event_log("p1")
    assert second.id == first.id, "the row keeps its identity"
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert (second.event_id, second.trace_id, second.entity_id) == ("run-2", None, "other")


def test_different_path_is_another_row(store: StateStore):
    store.upsert_event_log([entry("p1/a.parquet")])
    store.upsert_event_log([entry("p1/b.parquet")])
    other_bucket = EventLogEntry("bkt2", "p1/a.parquet", "p1", "window", "w", "e1")
    store.upsert_event_log([other_bucket])
    rows = store.list_event_log("p1")
    assert [(r.bucket_name, r.bucket_path) for r in rows] == [
        ("bkt", "p1/a.parquet"), ("bkt", "p1/b.parquet"), ("bkt2", "p1/a.parquet")]
    assert len({r.id for r in rows}) == 3


def test_duplicates_within_one_batch_last_wins(store: StateStore):
    assert store.upsert_event_log([entry("k", event_id="old"), entry("k", event_id="new")]) == 1
    [row] = store.list_event_log("p1")
    assert row.event_id == "new"


def test_large_batch_is_chunked(store: StateStore):
    entries = [entry(f"p1/{i:05d}.jsonl", entity_id=f"w{i % 7}") for i in range(2503)]
    assert store.upsert_event_log(entries) == 2503
    rows = store.list_event_log("p1")
    assert len(rows) == 2503
    assert [r.bucket_path for r in rows] == sorted(e.bucket_path for e in entries)
    assert len(store.list_event_log("p1", entity_type="window", entity_id="w3")) == len(range(3, 2503, 7))
    assert store.delete_event_log([r.id for r in rows]) == 2503
    assert store.list_event_log("p1") == []


def test_filters_and_project_isolation(store: StateStore):
    store.upsert_event_log([
        entry("p1/w1.csv", entity_type="window", entity_id="w1"),
        entry("p1/w2.csv", entity_type="window", entity_id="w2"),
        entry("p1/m.json", entity_type="manifest", entity_id="w1"),
        entry("p2/w1.csv", project="p2", entity_type="window", entity_id="w1"),
    ])
    assert [r.bucket_path for r in store.list_event_log("p1", entity_type="window")] == ["p1/w1.csv", "p1/w2.csv"]
    assert [r.bucket_path for r in store.list_event_log("p1", entity_type="window", entity_id="w1")] == ["p1/w1.csv"]
    assert [r.bucket_path for r in store.list_event_log("p1", entity_id="w1")] == ["p1/m.json", "p1/w1.csv"]
    assert [r.bucket_path for r in store.list_event_log("p2")] == ["p2/w1.csv"]

    assert store.delete_project_event_log("p1", entity_type="manifest") == 1
    assert len(store.list_event_log("p1")) == 2
    assert store.delete_project_event_log("p1") == 2
    assert store.list_event_log("p1") == []
    assert [r.bucket_path for r in store.list_event_log("p2")] == ["p2/w1.csv"], "p2 untouched"
    assert store.delete_project_event_log("p1") == 0


def test_delete_by_ids_touches_only_those(store: StateStore):
    store.upsert_event_log([entry("a"), entry("b"), entry("c", project="p2")])
    a, b = store.list_event_log("p1")
    [c] = store.list_event_log("p2")
    assert store.delete_event_log([a.id, a.id, "no-such-id"]) == 1
    assert [r.id for r in store.list_event_log("p1")] == [b.id]
    assert [r.id for r in store.list_event_log("p2")] == [c.id]
    assert store.delete_event_log([]) == 0


def test_upsert_can_move_a_key_to_another_project(store: StateStore):
    # The key identifies the object; whoever wrote it last owns the row.
    store.upsert_event_log([entry("shared/x", project="p1")])
    store.upsert_event_log([entry("shared/x", project="p2")])
    assert store.list_event_log("p1") == []
    assert [r.project_id for r in store.list_event_log("p2")] == ["p2"]


def test_empty_batch_is_a_noop(store: StateStore):
    assert store.upsert_event_log([]) == 0
    assert store.list_event_log("p1") == []


def test_bad_input_names_the_field(store: StateStore):
    with pytest.raises(ValueError, match="bucket_path"):
        entry("")
    with pytest.raises(ValueError, match="event_id"):
        entry("x", event_id="")
    with pytest.raises(ValueError, match="created_at"):
        entry("x", created_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="entries"):
        store.upsert_event_log([{"bucket_path": "x"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="project_id"):
        store.list_event_log("")
    with pytest.raises(ValueError, match="ids"):
        store.delete_event_log([""])
