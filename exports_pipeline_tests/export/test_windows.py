"""Timestamps as the exports write them."""

from __future__ import annotations

import datetime as dt
import time

from exports_pipeline.windows import iso


def test_iso_reads_a_naive_timestamp_as_utc_whatever_the_machines_zone(monkeypatch):
    """ClickHouse hands back DateTime64(6, 'UTC') values naive; a manifest must not shift them by the
    process's local zone (a container with TZ set would have)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = dt.datetime(2026, 11, 19, 10, 0, 0, 123456)
        assert iso(naive) == "2026-11-19T10:00:00.123456Z"
        assert iso(naive.replace(tzinfo=dt.UTC)) == iso(naive)
        assert iso(dt.datetime(2026, 11, 19, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))) == \
            "2026-11-19T10:00:00.000000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
