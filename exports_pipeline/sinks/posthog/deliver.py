"""Deliver one window of one project to PostHog: stream the events ClickHouse renders, cut them into
requests under the caps, send them with bounded concurrency; raise the classified fault or return counts.

Python never looks at an ordinary event: each Arrow batch of the `line` column is one data buffer plus
an offsets array, so a request is a slice of the buffer found with one `searchsorted` over the offsets
(no per-row Python). Only lines long enough to possibly break PostHog's per-event cap are examined, and
only those that do are parsed and cut (`mapping.cut_event`), each counted. Memory is bounded by one Arrow
batch plus the requests in flight (`PostHogClient.sender`), whatever the window's size.

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
import pyarrow as pa

from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags
from exports_pipeline.resources.posthog import MAX_EVENT_BYTES, MAX_REQUEST_BYTES, PostHogClient, Sent, event_cost
from exports_pipeline.sinks.posthog import mapping
from exports_pipeline.state.models import PostHogIntegration

ROWS_PER_BATCH = 50_000


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
    window: Any,
    run_id: str | None,
    historical: bool,
    log: logging.Logger | Any,
    langfuse_url: str | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_event_bytes: int = MAX_EVENT_BYTES,
    rows_per_batch: int = ROWS_PER_BATCH,
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
    with client.sender(historical=historical, sent=sent) as sender, \
            clickhouse.arrow_batches(sql, params, settings=mapping.SETTINGS, tags=tags,
                                     rows_per_batch=rows_per_batch) as batches:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            data, offsets, batch_cut = _lines(batch.column(0), max_event_bytes)
            cut += batch_cut
            events += len(offsets) - 1
            start = 0
            last = len(offsets) - 1
            while start < last:
                end = int(np.searchsorted(offsets, offsets[start] + budget, side="right")) - 1
                end = max(end, start + 1)
                sender.submit(data[offsets[start]:offsets[end] - 1])  # drop the last line's comma
                start = end
    seconds = time.monotonic() - started
    delivery = Delivery(events=events, requests=sent.requests, bytes=sent.bytes_gzip,
                        bytes_uncompressed=sent.bytes_raw, seconds=seconds, events_cut=cut,
                        retries=sent.retries, historical=historical)
    log.info("PostHog: project %s window [%s, %s): %d events in %d requests (%d bytes gzip'd, %d cut, %d retries) "
             "in %.2f s", project_id, _iso(window.start), _iso(window.end), delivery.events, delivery.requests,
             delivery.bytes, delivery.events_cut, delivery.retries, seconds)
    return delivery


def _lines(column: Any, max_event_bytes: int) -> tuple[memoryview, np.ndarray, int]:
    """The batch's lines as (data, offsets): line k is `data[offsets[k]:offsets[k+1]]`. Lines over the
    per-event cap are cut (their count is returned); the buffer is rebuilt only for a batch that has one."""
    _validity, offsets_buf, data_buf = column.buffers()[:3]
    large = pa.types.is_large_binary(column.type) or pa.types.is_large_string(column.type)
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if large else np.int32)
    offsets = offsets[column.offset: column.offset + len(column) + 1]
    data = memoryview(data_buf)
    # An event's cost is at most twice its length (every byte a `"` or `\`): shorter lines cannot be over.
    suspects = np.nonzero(np.diff(offsets) > max_event_bytes // 2)[0]
    over = [int(k) for k in suspects if event_cost(data[offsets[k]:offsets[k + 1] - 1]) > max_event_bytes]
    if not over:
        return data, offsets, 0
    lines = [bytes(data[offsets[k]:offsets[k + 1]]) for k in range(len(offsets) - 1)]
    for k in over:
        lines[k] = mapping.cut_event(lines[k][:-1], max_event_bytes, cost=event_cost) + b","
    sizes = np.fromiter((len(line) for line in lines), dtype=np.int64, count=len(lines))
    rebuilt = np.concatenate(([0], np.cumsum(sizes)))
    return memoryview(b"".join(lines)), rebuilt, len(over)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
