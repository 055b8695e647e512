"""Deliver one window to Mixpanel: ClickHouse renders the events (`mapping.py`), this cuts the stream into
requests under Mixpanel's caps, and the client (`resources/mixpanel.py`) sends them, a few at a time.

Memory stays flat whatever the window's size: ClickHouse streams ~1 MiB blocks (`engine/lines.py`, shared
with PostHog: TabSeparated, time sub-ranges for long windows), each is cut into lines, and
at most `max_in_flight` requests (<= 10 MB each) wait for an answer. Python touches each line only to slice
off its flag and to count bytes: no JSON parsing, except of a line over Mixpanel's 1 MB event cap, which
cannot arise from the mapping's own caps and is shrunk here should a future property make it possible.

No Dagster and no state writes: the engine records the window, moves the cursor and disables the
integration on a `CustomerFault`. Events Mixpanel refused (a 400 with `failed_records`) are in the result,
never retried; every other failure raises the client's classified fault.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exports_pipeline.engine.lines import window_lines
from exports_pipeline.windows import Window, iso
from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags
from exports_pipeline.resources.mixpanel import MixpanelClient
from exports_pipeline.sinks.mixpanel.mapping import (
    ARRAY_MAX_ITEMS,
    CUT_ARRAY,
    EVENT_MAX_BYTES,
    JSON_SETTINGS,
    flag_counts,
    window_events_parameters,
    window_events_sql,
)
from exports_pipeline.state.models import MixpanelIntegration

_ZERO = ord("0")


@dataclass
class Delivery:
    """What one window's delivery did (the engine turns it into run metadata and the window's check)."""

    events: int = 0  # rendered from ClickHouse and sent
    requests: int = 0
    bytes: int = 0  # uncompressed JSON sent
    bytes_sent: int = 0  # gzip'd, retries included
    seconds: float = 0.0
    events_cut: int = 0  # events with anything cut or repaired for Mixpanel's limits
    strings_cut: int = 0
    arrays_cut: int = 0
    utf8_repaired: int = 0
    imported: int = 0  # Mixpanel's num_records_imported, summed
    failed: int = 0  # refused by Mixpanel (400 failed_records): not retried
    failed_samples: list[str] = field(default_factory=list)  # "<$insert_id>: <field>: <message>"
    retries: int = 0
    splits: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every event sent was imported (what the window's check asserts, beside ClickHouse's count)."""
        return self.failed == 0 and self.imported == self.events

    def metadata(self) -> dict[str, Any]:
        return {
            "events": self.events, "requests": self.requests, "bytes": self.bytes, "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3), "events_per_second": round(self.events_per_second, 1),
            "events_cut": self.events_cut, "strings_cut": self.strings_cut, "arrays_cut": self.arrays_cut,
            "utf8_repaired": self.utf8_repaired, "imported": self.imported, "failed": self.failed,
            "failed_samples": list(self.failed_samples), "retries": self.retries, "splits_after_413": self.splits,
        }

    def error_text(self) -> str | None:
        """For the integration's `last_error` when Mixpanel refused events."""
        if not self.failed:
            return None
        return f"Mixpanel refused {self.failed} of {self.events} events: " + "; ".join(self.failed_samples)


def deliver_window(
    clickhouse: ClickHouseResource,
    client: MixpanelClient,
    integration: MixpanelIntegration,
    *,
    project_id: str,
    window: Window,
    run_id: str,
    historical: bool,
    log: Callable[[str], None] = lambda _msg: None,
    langfuse_url: str | None = None,
    project_name: str | None = None,
) -> Delivery:
    """Send the window's events. `historical` changes nothing for Mixpanel: `/import` takes any time after
    1971 (PostHog needs a flag for old events; Mixpanel's `/track` would drop those over 5 days old)."""
    del historical
    if integration.project_id != project_id:
        raise ValueError(f"integration of project {integration.project_id!r} cannot deliver project {project_id!r}")
    started = time.monotonic()
    sql = window_events_sql(clickhouse.events_table, with_urls=bool(langfuse_url), with_project_name=bool(project_name))
    params = window_events_parameters(project_id, window, langfuse_url=langfuse_url, project_name=project_name)
    tags = query_tags(sink="mixpanel", project=project_id, window=iso(window.start), run=run_id)
    flags: collections.Counter[int] = collections.Counter()
    settings = client.settings
    with client.sender() as sender:
        batch: list[bytes] = []
        size = 0
        for line in window_lines(clickhouse, sql, params, window=window, settings=JSON_SETTINGS, tags=tags):
            flag, event = line[0] - _ZERO, line[2:]
            if len(event) >= EVENT_MAX_BYTES:
                event = fit_event(event)
                flag |= CUT_ARRAY
            flags[flag] += 1
            if len(batch) >= settings.max_events_per_request or size + len(event) > settings.max_request_bytes:
                sender.submit(batch)
                batch, size = [], 0
            batch.append(event)
            size += len(event) + 1
        if batch:
            sender.submit(batch)
        totals = sender.finish()
    counts = flag_counts({f: n for f, n in flags.items()})
    delivery = Delivery(
        events=sum(flags.values()), requests=totals.requests, bytes=totals.bytes_uncompressed,
        bytes_sent=totals.bytes_sent, seconds=time.monotonic() - started, imported=totals.imported,
        failed=totals.failed, failed_samples=[str(r) for r in totals.failed_samples], retries=totals.retries,
        splits=totals.splits, **counts,
    )
    log(f"mixpanel {project_id} [{iso(window.start)}, {iso(window.end)}): {delivery.events:,} events in "
        f"{delivery.requests:,} requests, {delivery.seconds:.1f} s ({delivery.events_per_second:,.0f}/s); "
        f"imported {delivery.imported:,}, refused {delivery.failed:,}, cut {delivery.events_cut:,}")
    return delivery


def fit_event(event: bytes) -> bytes:
    """An event under Mixpanel's 1 MB cap: `langfuse_tags` shortened until it fits (the only property the
    mapping lets grow that far). Parsing JSON is fine here: this is the rare line, never the common one."""
    data = json.loads(event)
    props = data["properties"]
    tags = props.get("langfuse_tags") or []
    del tags[ARRAY_MAX_ITEMS:]
    encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    while len(encoded) >= EVENT_MAX_BYTES and tags:
        del tags[len(tags) // 2:]
        encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    if len(encoded) >= EVENT_MAX_BYTES:
        raise ValueError(f"event {props.get('$insert_id')} stays over Mixpanel's 1 MB cap without its tags")
    return encoded
