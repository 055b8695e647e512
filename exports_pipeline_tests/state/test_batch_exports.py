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


def test_claim_by_run_is_idempotent_for_that_run_only(store: StateStore):
    batch = create(store)
    first = store.claim_batch_export(batch.id, "run-a")
    assert first.status == "PROCESSING" and first.run_id == "run-a" and first.started_at is not None
    again = store.claim_batch_export(batch.id, "run-a")  # a step retry of the same run carries on
    assert again.id == batch.id and again.run_id == "run-a" and again.started_at == first.started_at
    assert store.claim_batch_export(batch.id, "run-b") is None, "another run never takes an owned row"
    assert store.claim_batch_export(batch.id) is None
    assert store.get_batch_export(batch.id).run_id == "run-a"


def test_two_runs_claim_one_wins_and_only_the_winner_reclaims(store: StateStore):
    batch = create(store)
    barrier = threading.Barrier(2)
    results: dict[str, BatchExport | None] = {}

    def claim(run: str) -> None:
        barrier.wait()
        results[run] = store.claim_batch_export(batch.id, run)

    threads = [threading.Thread(target=claim, args=(run,)) for run in ("r1", "r2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [run for run, row in results.items() if row is not None]
    assert len(winners) == 1
    loser = ({"r1", "r2"} - set(winners)).pop()
    assert store.claim_batch_export(batch.id, winners[0]) is not None
    assert store.claim_batch_export(batch.id, loser) is None


def test_cancel_of_a_running_export_is_a_request_the_run_acknowledges(store: StateStore):
    batch = create(store)
    store.claim_batch_export(batch.id, "run-a")
    asked = store.request_batch_export_cancel(batch.id)
    assert asked.status == "PROCESSING" and asked.cancel_requested_at is not None
    assert store.request_batch_export_cancel(batch.id).cancel_requested_at == asked.cancel_requested_at
    # The run finished its file at the same moment: completing loses against the request.
    assert store.complete_batch_export(batch.id, "file:///x", datetime(2030, 1, 1, tzinfo=UTC)) is None
    done = store.acknowledge_batch_export_cancel(batch.id, "cancelled while running; no file was kept")
    assert done.status == "CANCELLED" and done.finished_at is not None and "no file" in done.message
    assert store.request_batch_export_cancel(create(store).id) is None, "a queued export is cancelled directly"


def test_complete_records_what_the_run_did_and_notes_append(store: StateStore):
    batch = store.create_batch_export("p", "u", "n", QUERY, "CSV", compression="gzip", email="a@example.com")
    assert (batch.compression, batch.email, batch.truncated) == ("gzip", "a@example.com", False)
    store.claim_batch_export(batch.id, "run-a")
    store.record_batch_export_progress(batch.id, rows_matched=12)
    done = store.complete_batch_export(batch.id, "https://x", datetime(2030, 1, 1, tzinfo=UTC), rows_written=10,
                                       rows_matched=12, truncated=True, bytes=345, object_uri="s3://b/k",
                                       object_key="k", message="10 of 12 rows")
    assert (done.rows_written, done.rows_matched, done.truncated, done.bytes) == (10, 12, True, 345)
    assert (done.object_uri, done.object_key, done.message) == ("s3://b/k", "k", "10 of 12 rows")
    noted = store.add_batch_export_message(batch.id, "mail not sent")
    assert noted.message == "10 of 12 rows\nmail not sent" and noted.status == "COMPLETED"
    assert [b.id for b in store.list_batch_exports(with_file=True)] == [batch.id]
    gone = store.mark_batch_export_file_deleted(batch.id, "file deleted after 30 days")
    assert gone.file_deleted_at is not None and gone.url is None and gone.message.endswith("30 days")
    assert store.list_batch_exports(with_file=True) == []


def test_created_as_claimed_is_never_queued(store: StateStore):
    batch = store.create_batch_export("p", "u", "n", QUERY, "CSV", claimed_by_run="run-x")
    assert batch.status == "PROCESSING" and batch.run_id == "run-x"
    assert store.list_batch_exports(status="QUEUED") == []
    assert store.claim_batch_export(batch.id, "run-x") is not None
