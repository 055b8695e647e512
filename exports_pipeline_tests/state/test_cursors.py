"""The cursor moves only across a gap-free run of finished windows, whatever order they finish in."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from exports_pipeline.state import StateStore

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def w(i: int) -> tuple[datetime, datetime]:
    """The i-th hourly window (1-based) after ORIGIN."""
    return ORIGIN + (i - 1) * H, ORIGIN + i * H


def finish(store: StateStore, i: int, sink: str = "object_storage:hourly", project: str = "p1", run: str | None = None):
    start, end = w(i)
    return store.finish_window(sink, project, start, end, run or f"run-{i}", origin=ORIGIN)


def test_out_of_order_windows(store: StateStore):
    assert store.get_cursor("object_storage:hourly", "p1") is None

    c = finish(store, 2)
    assert c.last_sync_at == ORIGIN, "w1 is missing: the cursor stays at the origin"
    assert c.last_run_id == "run-2" and c.last_sync_at.tzinfo == UTC

    c = finish(store, 1)
    assert c.last_sync_at == w(2)[1], "w1 closes the gap: cursor jumps to the end of w2"

    c = finish(store, 4)
    assert c.last_sync_at == w(2)[1], "w3 is missing"

    c = finish(store, 3)
    assert c.last_sync_at == w(4)[1]
    assert store.get_cursor("object_storage:hourly", "p1") == c
    assert store.list_finished_windows("object_storage:hourly", "p1") == [w(i) for i in (1, 2, 3, 4)]


def test_refinishing_a_window_is_idempotent(store: StateStore):
    finish(store, 1)
    finish(store, 2)
    again = finish(store, 1, run="rerun")
    assert again.last_sync_at == w(2)[1]
    assert again.last_run_id == "rerun"
    assert store.list_finished_windows("object_storage:hourly", "p1") == [w(1), w(2)]
    finish(store, 4)
    assert finish(store, 4).last_sync_at == w(2)[1]


def test_windows_before_origin_do_not_count(store: StateStore):
    before = (ORIGIN - H, ORIGIN)
    c = store.finish_window("s", "p1", *before, "r", origin=ORIGIN)
    assert c.last_sync_at == ORIGIN
    c = store.finish_window("s", "p1", ORIGIN + H, ORIGIN + 2 * H, "r", origin=ORIGIN)
    assert c.last_sync_at == ORIGIN


def test_origin_only_matters_for_a_new_cursor(store: StateStore):
    finish(store, 1)
    later_origin = ORIGIN + 10 * H
    c = store.finish_window("object_storage:hourly", "p1", *w(2), "r", origin=later_origin)
    assert c.last_sync_at == w(2)[1]


def test_larger_window_covering_the_cursor_advances_it(store: StateStore):
    # An integration switched from hourly to daily: its first daily window starts before the cursor.
    for i in range(1, 6):
        finish(store, i)
    day = (ORIGIN, ORIGIN + timedelta(days=1))
    c = store.finish_window("object_storage:hourly", "p1", *day, "daily-1", origin=ORIGIN)
    assert c.last_sync_at == day[1]


def test_cursor_error_then_recovery(store: StateStore):
    c = store.record_cursor_error("posthog", "p1", "429 " + "x" * 3000)
    assert c.last_sync_at is None and len(c.last_error) == 1000 and c.last_error_at.tzinfo == UTC
    c = store.finish_window("posthog", "p1", *w(1), "r1", origin=ORIGIN)
    assert c.last_sync_at == w(1)[1], "an error-only row starts from the origin"
    assert c.last_error is None and c.last_error_at is None
    c = store.record_cursor_error("posthog", "p1", "boom")
    assert c.last_sync_at == w(1)[1] and c.last_error == "boom"


def test_sinks_and_projects_are_independent(store: StateStore):
    finish(store, 1, sink="posthog", project="p1")
    finish(store, 1, sink="mixpanel", project="p1")
    finish(store, 2, sink="mixpanel", project="p1")
    finish(store, 1, sink="posthog", project="p2")
    assert store.get_cursor("posthog", "p1").last_sync_at == w(1)[1]
    assert store.get_cursor("mixpanel", "p1").last_sync_at == w(2)[1]
    store.reset_cursor("posthog", "p1")
    assert store.get_cursor("posthog", "p1") is None
    assert store.list_finished_windows("posthog", "p1") == []
    assert store.get_cursor("posthog", "p2").last_sync_at == w(1)[1]
    assert store.get_cursor("mixpanel", "p1").last_sync_at == w(2)[1]
    c = finish(store, 2, sink="posthog", project="p1")
    assert c.last_sync_at == ORIGIN, "after a reset old windows are forgotten"


def _race(store: StateStore, project: str, windows: list[int]) -> list[BaseException]:
    barrier = threading.Barrier(len(windows))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            finish(store, i, project=project)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in windows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_two_threads_finishing_different_windows(store: StateStore):
    # Each round races w1 against w2 on a fresh project: whichever commits last must see the other.
    for round_no in range(15):
        project = f"race-{round_no}"
        assert _race(store, project, [1, 2]) == []
        assert store.get_cursor("object_storage:hourly", project).last_sync_at == w(2)[1], round_no


def test_many_threads_finishing_shuffled_windows(store: StateStore):
    windows = list(range(1, 9))
    random.Random(7).shuffle(windows)
    assert _race(store, "many", windows) == []
    assert store.get_cursor("object_storage:hourly", "many").last_sync_at == w(8)[1]


def test_bad_input_names_the_field(store: StateStore):
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="window_start"):
        store.finish_window("s", "p", naive, ORIGIN + H, "r", origin=ORIGIN)
    with pytest.raises(ValueError, match="window_end"):
        store.finish_window("s", "p", ORIGIN, naive, "r", origin=ORIGIN)
    with pytest.raises(ValueError, match="origin"):
        store.finish_window("s", "p", ORIGIN, ORIGIN + H, "r", origin=naive)
    with pytest.raises(ValueError, match="window_end"):
        store.finish_window("s", "p", ORIGIN, ORIGIN, "r", origin=ORIGIN)
    with pytest.raises(ValueError, match="sink"):
        store.finish_window("", "p", ORIGIN, ORIGIN + H, "r", origin=ORIGIN)
    with pytest.raises(ValueError, match="error"):
        store.record_cursor_error("s", "p", None)  # type: ignore[arg-type]
    assert store.get_cursor("s", "p") is None, "nothing was written by the rejected calls"


def test_empty_error_message_is_still_recorded(store: StateStore):
    # str(exc) is often "" and this runs inside exception handlers: it must not raise instead.
    assert store.record_cursor_error("s", "p", "").last_error == "(no message)"
