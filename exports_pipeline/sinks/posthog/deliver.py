"""Deliver one window of one project to PostHog: stream the events ClickHouse renders, cut them into
requests under the caps, send them with bounded concurrency; raise the classified fault or return counts.

Reading is the API sinks' shared path (`engine/lines.py`: TabSeparated blocks of whole lines, time
sub-ranges for long windows), so ClickHouse's memory does not grow with the window. Python never looks at
an ordinary event: a block's line ends are found with one numpy pass, and a request is a run of whole
lines (`{...},\n`) sliced from the blocks, found with `searchsorted` (no per-row Python); the newlines stay
in the body as JSON whitespace. Only lines long enough to possibly break PostHog's per-event cap are
examined, and only those that do are parsed and cut (`mapping.cut_event`), each counted. Memory is bounded
by one block, one request being filled and the requests in flight (`PostHogClient.sender`).

No Dagster and no state writes here: the engine records the window, moves the cursor only when this
returns (every batch accepted), and disables the integration on a `CustomerFault`. A re-run sends the
same events with the same uuids (the uuid is a function of project and span id), so PostHog deduplicates.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from exports_pipeline.engine.lines import line_blocks
from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags
from exports_pipeline.resources.posthog import MAX_EVENT_BYTES, MAX_REQUEST_BYTES, PostHogClient, Sent, event_cost
from exports_pipeline.sinks.posthog import mapping
from exports_pipeline.state.models import PostHogIntegration
from exports_pipeline.windows import Window

_NEWLINE = ord("\n")


@dataclass(frozen=True)
class Delivery:
    """What one window's delivery did (the run's metadata)."""

    events: int
    requests: int
    bytes: int  # gzip'd bytes on the wire
    bytes_uncompressed: int
    seconds: float
    events_cut: int
    retries: int
    historical: bool

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict[str, Any]:
        return {"events": self.events, "requests": self.requests, "bytes": self.bytes,
                "bytes_uncompressed": self.bytes_uncompressed, "seconds": round(self.seconds, 3),
                "events_per_second": round(self.events_per_second, 1), "events_cut": self.events_cut,
                "retries": self.retries, "historical_migration": self.historical}


def deliver_window(
    clickhouse: ClickHouseResource,
    client: PostHogClient,
    integration: PostHogIntegration,
    *,
    project_id: str,
    window: Window,
    run_id: str | None,
    historical: bool,
    log: logging.Logger | Any,
    langfuse_url: str | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> Delivery:
    """Send every event of `[window.start, window.end)` of `project_id`; raises `CustomerFault` /
    `TransientFault` (after the client's retries) from the first batch that failed."""
    if integration.project_id != project_id:
        raise ValueError(f"integration of {integration.project_id!r} given for project {project_id!r}")
    started = time.monotonic()
    context = mapping.MappingContext(project_id, getattr(integration, "project_name", None), langfuse_url)
    sql = mapping.events_sql(clickhouse.events_table, with_urls=bool(langfuse_url))
    params = context.parameters(window.start, window.end)
    tags = query_tags(sink="posthog", project=project_id, run=run_id, window=_iso(window.start))
    budget = max_request_bytes - client.envelope_bytes(historical) - 1
    # One event always fits one request: a request cap below the event cap lowers the event cap with it.
    max_event_bytes = min(max_event_bytes, budget)
    events = cut = 0
    sent = Sent()
    log.info("PostHog: sending project %s window [%s, %s) to %s%s", project_id, _iso(window.start),
             _iso(window.end), client, " as historical_migration" if historical else "")
    with client.sender(historical=historical, sent=sent) as sender:
        request = _Request(sender.submit, budget)
        for block in line_blocks(clickhouse, sql, params, window=window, settings=mapping.SETTINGS, tags=tags):
            block, ends, block_cut = _fit(block, max_event_bytes)
            cut += block_cut
            events += len(ends)
            request.add(block, ends)
        request.flush()
    seconds = time.monotonic() - started
    delivery = Delivery(events=events, requests=sent.requests, bytes=sent.bytes_gzip,
                        bytes_uncompressed=sent.bytes_raw, seconds=seconds, events_cut=cut,
                        retries=sent.retries, historical=historical)
    log.info("PostHog: project %s window [%s, %s): %d events in %d requests (%d bytes gzip'd, %d cut, %d retries) "
             "in %.2f s", project_id, _iso(window.start), _iso(window.end), delivery.events, delivery.requests,
             delivery.bytes, delivery.events_cut, delivery.retries, seconds)
    return delivery


class _Request:
    """The request being filled: runs of whole lines from successive blocks, submitted when the next line
    would take it over `budget` bytes (lines with their `,\n`; the last line's two are dropped on submit)."""

    def __init__(self, submit: Any, budget: int) -> None:
        self.submit, self.budget = submit, budget
        self.parts: list[memoryview] = []
        self.size = 0

    def add(self, block: bytes, ends: np.ndarray) -> None:
        """`ends[k]` is where line k of `block` ends (after its newline)."""
        view = memoryview(block)
        pos = first = 0
        while first < len(ends):
            fit = int(np.searchsorted(ends, pos + self.budget - self.size, side="right"))
            if fit <= first:  # the next line does not fit: send what is waiting, or send it alone
                if self.parts:
                    self.flush()
                    continue
                fit = first + 1
            end = int(ends[fit - 1])
            self.parts.append(view[pos:end])
            self.size += end - pos
            pos, first = end, fit

    def flush(self) -> None:
        if self.parts:
            self.parts[-1] = self.parts[-1][:-2]  # the last line's `,\n`
            body = b"".join(self.parts)
            self.parts, self.size = [], 0
            self.submit(body)


def _fit(block: bytes, max_event_bytes: int) -> tuple[bytes, np.ndarray, int]:
    """The block, where each of its lines ends, and how many lines were cut to PostHog's per-event cap;
    the block is rebuilt only when it has a line over the cap."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE) + 1
    # An event's cost is at most twice its length (every byte a `"` or `\`): shorter lines cannot be over.
    lengths = np.diff(ends, prepend=0)
    suspects = np.flatnonzero(lengths > max_event_bytes // 2)
    over = [int(k) for k in suspects
            if event_cost(memoryview(block)[ends[k] - lengths[k]:ends[k] - 2]) > max_event_bytes]
    if not over:
        return block, ends, 0
    lines = block.split(b"\n")
    lines.pop()
    for k in over:
        lines[k] = mapping.cut_event(lines[k][:-1], max_event_bytes, cost=event_cost) + b","
    rebuilt = b"\n".join(lines) + b"\n"
    return rebuilt, np.flatnonzero(np.frombuffer(rebuilt, dtype=np.uint8) == _NEWLINE) + 1, len(over)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
