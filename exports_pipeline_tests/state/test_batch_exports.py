"""Batch export requests move QUEUED → PROCESSING → COMPLETED/FAILED, or QUEUED → CANCELLED, once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from exports_pipeline.state import BatchExport, StateStore

QUERY = {"tableName": "events", "filter": [{"column": "name", "operator": "=", "value": "x"}], "limit": None}


def create(store: StateStore, project: str = "p1", user: str = "u1", fmt: str = "JSONL") -> BatchExport:
    return store.create_batch_export(project, user, f"{project} export as {fmt}", QUERY, fmt)


def test_create_and_get(store: StateStore):
    before = datetime.now(UTC)
    batch = create(store)
    assert batch.status == "QUEUED" and batch.format == "JSONL" and batch.query == QUERY
    assert len(batch.id) == 32 and batch.url is None and batch.log is None
    assert batch.created_at.tzinfo == UTC and before <= batch.created_at <= datetime.now(UTC)
    assert batch.finished_at is None and batch.expires_at is None
    assert store.get_batch_export(batch.id) == batch
    assert store.get_batch_export("nope") is None
    assert create(store).id != batch.id


def test_happy_path(store: StateStore):
    batch = create(store, fmt="PARQUET")
    claimed = store.claim_batch_export(batch.id)
    assert claimed.status == "PROCESSING" and claimed.updated_at >= batch.updated_at
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    done = store.complete_batch_export(batch.id, "https://s3/x?sig=1", expires)
    assert done.status == "COMPLETED" and done.url == "https://s3/x?sig=1" and done.expires_at == expires
    assert done.finished_at is not None and done.finished_at.tzinfo == UTC
    assert "sig=1" not in repr(done), "presigned URLs stay out of reprs"
    assert store.get_batch_export(batch.id) == done
    # Terminal: nothing moves it any more.
    assert store.claim_batch_export(batch.id) is None
    assert store.cancel_batch_export(batch.id) is None
    assert store.fail_batch_export(batch.id, "late") is None
    assert store.get_batch_export(batch.id).status == "COMPLETED"


def test_complete_requires_processing(store: StateStore):
    batch = create(store)
    assert store.complete_batch_export(batch.id, "https://u", datetime(2030, 1, 1, tzinfo=UTC)) is None
    assert store.get_batch_export(batch.id).status == "QUEUED"


def test_fail_records_log(store: StateStore):
    batch = create(store)
    store.claim_batch_export(batch.id)
    failed = store.fail_batch_export(batch.id, "Query exceeded memory " + "m" * 2000)
    assert failed.status == "FAILED" and len(failed.log) == 1000 and failed.log.startswith("Query exceeded")
    assert failed.finished_at is not None
    stale = create(store)
    assert store.fail_batch_export(stale.id, "older than 30 days, please retry").status == "FAILED"


def test_cancel_only_from_queued(store: StateStore):
    queued = create(store)
    cancelled = store.cancel_batch_export(queued.id)
    assert cancelled.status == "CANCELLED" and cancelled.finished_at is not None
    assert store.claim_batch_export(queued.id) is None, "a cancelled export is never picked up"

    running = create(store)
    store.claim_batch_export(running.id)
    assert store.cancel_batch_export(running.id) is None
    assert store.get_batch_export(running.id).status == "PROCESSING"
    assert store.cancel_batch_export("missing") is None


def test_claim_only_once_sequentially(store: StateStore):
    batch = create(store)
    assert store.claim_batch_export(batch.id) is not None
    assert store.claim_batch_export(batch.id) is None
    assert store.claim_batch_export("missing") is None


def test_two_threads_claim_one_wins(store: StateStore):
    for round_no in range(10):
        batch = create(store)
        barrier = threading.Barrier(2)
        results: list[BatchExport | None] = []
        errors: list[BaseException] = []

        def claim() -> None:
            try:
                barrier.wait()
                results.append(store.claim_batch_export(batch.id))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=claim) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        winners = [r for r in results if r is not None]
        assert len(results) == 2 and len(winners) == 1, round_no
        assert winners[0].status == "PROCESSING"


def test_list_newest_first_with_filters(store: StateStore):
    a = create(store, "p1")
    time.sleep(0.002)
    b = create(store, "p2")
    time.sleep(0.002)
    c = create(store, "p1")
    store.claim_batch_export(c.id)
    assert [x.id for x in store.list_batch_exports()] == [c.id, b.id, a.id]
    assert [x.id for x in store.list_batch_exports(project_id="p1")] == [c.id, a.id]
    assert [x.id for x in store.list_batch_exports(status="QUEUED")] == [b.id, a.id]
    assert [x.id for x in store.list_batch_exports(project_id="p1", status="PROCESSING")] == [c.id]
    assert store.list_batch_exports(project_id="p3") == []


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("format", ("p", "u", "n", QUERY, "XLSX")),
        ("format", ("p", "u", "n", QUERY, "csv")),
        ("query", ("p", "u", "n", ["not", "a", "dict"], "CSV")),
        ("query", ("p", "u", "n", {"when": datetime(2024, 1, 1)}, "CSV")),
        ("project_id", ("", "u", "n", QUERY, "CSV")),
        ("user_id", ("p", "", "n", QUERY, "CSV")),
        ("name", ("p", "u", "", QUERY, "CSV")),
    ],
)
def test_bad_create_names_the_field(store: StateStore, field, args):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        store.create_batch_export(*args)
    assert store.list_batch_exports() == []


def test_bad_transition_arguments_name_the_field(store: StateStore):
    batch = create(store)
    store.claim_batch_export(batch.id)
    with pytest.raises(ValueError, match="expires_at"):
        store.complete_batch_export(batch.id, "https://u", datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="url"):
        store.complete_batch_export(batch.id, "", datetime.now(UTC) + timedelta(hours=24))
    with pytest.raises(ValueError, match="status"):
        store.list_batch_exports(status="DONE")
    with pytest.raises(ValueError, match="log"):
        store.fail_batch_export(batch.id, None)  # type: ignore[arg-type]
    assert store.get_batch_export(batch.id).status == "PROCESSING"
    assert store.fail_batch_export(batch.id, "").log == "An internal error occurred"
