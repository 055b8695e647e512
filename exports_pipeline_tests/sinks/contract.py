"""The windowed-sink contract, one test base every sink's tests reuse (PostHog's batch exports do the
same with one base test per destination).

A sink's test module subclasses `WindowedSinkContract` and provides the `harness` fixture: a `Harness`
over real services (the sink's own test peer, chDB, a state DB) that knows how to add an integration, what
arrived at the destination, and how to make the destination refuse (the customer's fault) or fail for a
while (transient). Every test here runs the engine's own `run_window` with the sink's plug-in, and reads
what arrived back and compares it with ClickHouse FINAL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from exports_pipeline.engine.late_rows import _Scan, scan_integration
from exports_pipeline.engine.runner import run_window
from exports_pipeline.errors import CustomerFault, TransientFault
from exports_pipeline.windows import Window
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START

DAY = Window(DAY_START, DAY_END)
EMPTY_DAY = Window(DAY_START - dt.timedelta(days=30), DAY_END - dt.timedelta(days=30))


@dataclass
class Harness:
    """What a sink's tests provide. `arrived(project, window)` returns the span ids that reached the
    destination for that window (each id once per delivery: duplicates show as repeats); `refuse()` makes
    the destination state a customer's fault until `heal()`; `fail_transiently()` makes it fail the next
    requests with a transient error; `resources` are the plug-in's resources; `frequency` one of its."""

    sink: Any
    clickhouse: Any
    state: Any
    resources: dict
    frequency: str
    add_integration: Any  # (project) -> None
    arrived: Any  # (project, window) -> list[str]
    refuse: Any
    heal: Any
    fail_transiently: Any


def source_span_ids(clickhouse, project: str, window: Window) -> list[str]:
    rows = clickhouse.query(
        f"SELECT span_id FROM {clickhouse.events_table} FINAL WHERE project_id = {{p:String}} "
        "AND start_time >= {s:DateTime64(6, 'UTC')} AND start_time < {e:DateTime64(6, 'UTC')} AND is_deleted = 0",
        {"p": project, "s": window.start, "e": window.end})
    return sorted(r[0] for r in rows)


def key(h: Harness, window: Window, project: str) -> str:
    fmt = "%Y-%m-%d-%H:%M" if h.frequency == "hourly" else "%Y-%m-%d"
    return f"{window.start.strftime(fmt)}|{project}"


def deliver(h: Harness, window: Window = DAY, project: str = "proj-1", run: str | None = None):
    return run_window(h.sink, clickhouse=h.clickhouse, state=h.state, resources=h.resources,
                      frequency=h.frequency, project_id=project, window=window,
                      partition_key=key(h, window, project), run_id=run or uuid.uuid4().hex,
                      now=window.end + dt.timedelta(days=1))


class WindowedSinkContract:
    """Subclass in a sink's test module and define the `harness` fixture."""

    def test_delivers_a_window_exactly(self, harness: Harness):
        harness.add_integration("proj-1")
        outcome = deliver(harness)
        expected = source_span_ids(harness.clickhouse, "proj-1", DAY)
        assert outcome.exported and outcome.delivered.rows == len(expected) > 0
        assert sorted(harness.arrived("proj-1", DAY)) == expected

    def test_redelivery_sends_the_same_ids(self, harness: Harness):
        harness.add_integration("proj-1")
        deliver(harness)
        first = sorted(set(harness.arrived("proj-1", DAY)))
        deliver(harness)
        assert sorted(set(harness.arrived("proj-1", DAY))) == first  # nothing new: same ids again

    def test_empty_window(self, harness: Harness):
        harness.add_integration("proj-1")
        outcome = deliver(harness, EMPTY_DAY)
        assert outcome.exported and outcome.delivered.rows == 0
        assert harness.arrived("proj-1", EMPTY_DAY) == []

    def test_another_projects_rows_never(self, harness: Harness):
        harness.add_integration("proj-1")
        harness.add_integration("proj-2")
        deliver(harness, project="proj-1")
        mine = set(harness.arrived("proj-1", DAY))
        theirs = set(source_span_ids(harness.clickhouse, "proj-2", DAY))
        assert mine and theirs and not (mine & theirs)

    def test_customer_fault_disables_the_integration(self, harness: Harness):
        harness.add_integration("proj-1")
        harness.refuse()
        try:
            with pytest.raises(CustomerFault):
                deliver(harness)
        finally:
            harness.heal()
        integration = harness.sink.get_integration(harness.state, "proj-1")
        assert not integration.enabled and integration.last_error
        assert harness.state.get_cursor(harness.sink.cursor_sink(harness.frequency), "proj-1").last_error

    def test_transient_fault_is_retried_and_never_disables(self, harness: Harness):
        harness.add_integration("proj-1")
        harness.fail_transiently()
        try:
            deliver(harness)  # the sink's own retries carry it through a short failure
        except TransientFault:
            deliver(harness)  # or the step's retry does
        assert harness.sink.get_integration(harness.state, "proj-1").enabled
        assert sorted(set(harness.arrived("proj-1", DAY))) == source_span_ids(harness.clickhouse, "proj-1", DAY)

    def test_cursor_moves_over_contiguous_windows_only(self, harness: Harness):
        harness.add_integration("proj-1")
        step = dt.timedelta(days=1) if harness.frequency != "hourly" else dt.timedelta(hours=1)
        first = Window(DAY.start, DAY.start + step)
        third = Window(DAY.start + 2 * step, DAY.start + 3 * step)
        second = Window(DAY.start + step, DAY.start + 2 * step)
        cursor_name = harness.sink.cursor_sink(harness.frequency)
        deliver(harness, first)
        assert harness.state.get_cursor(cursor_name, "proj-1").last_sync_at == first.end
        deliver(harness, third)
        assert harness.state.get_cursor(cursor_name, "proj-1").last_sync_at == first.end  # a gap: stays
        deliver(harness, second)
        assert harness.state.get_cursor(cursor_name, "proj-1").last_sync_at == third.end

    def test_late_rows_are_redelivered(self, harness: Harness):
        harness.add_integration("proj-1")
        deliver(harness)
        late = f"late-{uuid.uuid4().hex}"
        table = harness.clickhouse.events_table
        harness.clickhouse.command(
            f"INSERT INTO {table} SELECT * REPLACE ({{span:String}} AS span_id, now64(6) AS event_ts) FROM {table} "
            "FINAL WHERE project_id = 'proj-1' AND start_time >= {s:DateTime64(6, 'UTC')} "
            "AND start_time < {e:DateTime64(6, 'UTC')} LIMIT 1", {"span": late, "s": DAY.start, "e": DAY.end})
        scan = _Scan()
        integration = harness.sink.get_integration(harness.state, "proj-1")
        fmt = "%Y-%m-%d-%H:%M" if harness.frequency == "hourly" else "%Y-%m-%d"
        scan_integration(sink=harness.sink, integration=integration, frequency=harness.frequency,
                         clickhouse=harness.clickhouse, state=harness.state, resources=harness.resources,
                         now=DAY.end + dt.timedelta(hours=1), lookback=dt.timedelta(hours=72),
                         settle=dt.timedelta(minutes=15), partitions_start=DAY.start - dt.timedelta(days=60),
                         time_fmt=fmt, scan=scan, log=lambda _m: None)
        assert [c.partition_key for c in scan.changed] == [key(harness, DAY, "proj-1")]
        deliver(harness)  # what the sensor's request runs
        assert late in harness.arrived("proj-1", DAY)
