"""Export windows: half-open `[start, end)` in UTC, their names in object keys, and sub-ranges.

A row whose start_time equals a boundary belongs to the window that starts there and to no other
(Langfuse's closed windows exported boundary rows twice; see langfuse-exports §3.3).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

UTC = dt.UTC
FREQUENCIES = ("hourly", "daily", "weekly")
FREQUENCY_STEP = {"hourly": dt.timedelta(hours=1), "daily": dt.timedelta(days=1), "weekly": dt.timedelta(weeks=1)}


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(f"window {name} must be timezone-aware")
            object.__setattr__(self, name, value.astimezone(UTC))
        if not self.start < self.end:
            raise ValueError(f"window start {self.start} must be before its end {self.end}")

    def split(self, parts: int) -> list[Window]:
        """`parts` contiguous half-open sub-windows of (nearly) equal length, microsecond-aligned."""
        parts = max(1, parts)
        total_us = (self.end - self.start) // dt.timedelta(microseconds=1)
        parts = min(parts, total_us)
        bounds = [self.start + dt.timedelta(microseconds=total_us * i // parts) for i in range(parts)] + [self.end]
        return [Window(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def key_timestamp(value: dt.datetime) -> str:
    """`2026-11-19T10-00-00Z` (sub-second precision appended only when present, so keys stay unique)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H-%M-%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def iso(value: dt.datetime) -> str:
    """ISO-8601 UTC with microseconds, as every export and manifest writes timestamps. A naive value is
    UTC (what ClickHouse's DateTime64(6, 'UTC') columns come back as), never the machine's local time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def subrange_count(estimated_bytes: int, target_bytes: int, max_parts: int = 64) -> int:
    """How many sub-ranges keep each query's output near `target_bytes` (each sub-range query costs a
    FINAL pass, so they are sized by bytes, never by a small row count: environment-facts §10)."""
    if estimated_bytes <= 0:
        return 1
    return max(1, min(max_parts, math.ceil(estimated_bytes / target_bytes)))


def window_floor(value: dt.datetime, frequency: str) -> dt.datetime:
    """Start of the window of `frequency` containing `value` (weeks start on Monday, UTC)."""
    value = value.astimezone(UTC)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if frequency == "hourly":
        return value.replace(minute=0, second=0, microsecond=0)
    if frequency == "daily":
        return day
    if frequency == "weekly":
        return day - dt.timedelta(days=day.weekday())
    raise ValueError(f"unknown frequency {frequency!r}; expected one of {list(FREQUENCIES)}")


def window_starts(first: dt.datetime, until: dt.datetime, frequency: str) -> list[dt.datetime]:
    """Starts of the windows from `first`'s window up to (excluding) the window starting at `until`."""
    step = FREQUENCY_STEP[frequency]
    current, out = window_floor(first, frequency), []
    while current < until:
        out.append(current)
        current += step
    return out
