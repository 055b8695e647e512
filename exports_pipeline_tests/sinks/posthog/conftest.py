"""Fixtures of the PostHog sink tests: a few hand-made rows beside the seeded ones, and a fast client."""

from __future__ import annotations

import datetime as dt

import pytest

from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.object_store.retry import RetryPolicy
from exports_pipeline.resources.posthog import PostHogClient
from exports_pipeline.state.models import PostHogIntegration
from exports_pipeline_tests.posthog_peers import API_KEY
from exports_pipeline_tests.seeded_events import DAY_START

EXTRA_PROJECT = "ph-extra"
HUGE_NAME_BYTES = 1_200_000


def insert_extra_rows(ch: ClickHouseResource) -> None:
    """Rows the seeder does not make: `$posthog_session_id` metadata (twice: the first wins), user ids that
    need URL-encoding, a root without trace name, costs and usage, and one name over PostHog's cap."""
    t = ch.events_table
    base = DAY_START + dt.timedelta(hours=3)
    rows = [
        ("s-1", "tr-1", "", "root op", "", "u/ä b!*'()", "sess-1", ["$posthog_session_id", "x", "$posthog_session_id"],
         ["ph-sess-first", "1", "ph-sess-second"], {"total": "0.000123456789"}, {"input": 12, "output": 30, "total": 42}),
        ("s-2", "tr-1", "s-1", "child", "", "", "", ["other"], ["v"], {}, {}),
        ("s-3", "tr-2", "p", "x" * HUGE_NAME_BYTES, "big trace", "", "", [], [], {}, {}),
        ("s-4", "tr-3", "", "", "", "", "", [], [], {"input": "1"}, {"input": 18446744073709551615}),
    ]
    for i, (span, trace, parent, name, trace_name, user, session, mnames, mvalues, cost, usage) in enumerate(rows):
        start = base + dt.timedelta(seconds=i, microseconds=123456)
        ch.command(
            f"INSERT INTO {t} (project_id, trace_id, span_id, parent_span_id, start_time, end_time, "
            "completion_start_time, name, trace_name, user_id, session_id, metadata_names, metadata_values, "
            "cost_details, usage_details, tags, type, event_ts, created_at, updated_at) SELECT "
            "{p:String}, {trace:String}, {span:String}, {parent:String}, {start:DateTime64(6, 'UTC')}, "
            "{end:Nullable(DateTime64(6, 'UTC'))}, {cst:Nullable(DateTime64(6, 'UTC'))}, {name:String}, "
            "{tn:String}, {user:String}, {session:String}, {mn:Array(String)}, {mv:Array(String)}, "
            "mapFromArrays({ck:Array(String)}, arrayMap(x -> toDecimal64(x, 12), {cv:Array(String)})), "
            "mapFromArrays({uk:Array(String)}, {uv:Array(UInt64)}), ['a\"b', 'c'], 'GENERATION', "
            "{start:DateTime64(6, 'UTC')}, {start:DateTime64(6, 'UTC')}, {start:DateTime64(6, 'UTC')}",
            parameters={"p": EXTRA_PROJECT, "trace": trace, "span": span, "parent": parent, "start": start,
                        "end": start + dt.timedelta(milliseconds=1500, microseconds=999) if i % 2 == 0 else None,
                        "cst": start + dt.timedelta(microseconds=250_999) if i == 0 else None, "name": name,
                        "tn": trace_name, "user": user, "session": session, "mn": mnames, "mv": mvalues,
                        "ck": list(cost), "cv": list(cost.values()), "uk": list(usage),
                        "uv": list(usage.values())},
        )


@pytest.fixture(scope="module")
def source(seeded: ClickHouseResource) -> ClickHouseResource:
    insert_extra_rows(seeded)
    return seeded


def fast_client(url: str, *, key: str = API_KEY, attempts: int = 4, timeout: float = 5.0,
                concurrency: int = 3) -> PostHogClient:
    return PostHogClient(url, key, timeout_seconds=timeout, connect_timeout_seconds=2.0, concurrency=concurrency,
                         policy=RetryPolicy(max_attempts=attempts, backoff_base_seconds=0.05,
                                            backoff_max_seconds=0.2, retry_after_max_seconds=5.0))


def integration(project: str, url: str, box_key: str = "ab" * 32, name: str | None = "Shop") -> PostHogIntegration:
    from exports_pipeline.crypto import SecretBox

    return PostHogIntegration(project_id=project, encrypted_posthog_api_key=SecretBox(box_key).encrypt(API_KEY),
                              posthog_host_name=url, project_name=name)
