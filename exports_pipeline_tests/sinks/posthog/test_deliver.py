"""PostHog delivery end to end: ClickHouse (chDB, seeded) -> mapping -> gzip -> HTTP -> the contract-enforcing
receiver; every received event compared with ClickHouse FINAL field by field; re-runs; faults."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import time
import uuid
from decimal import Decimal

import pytest

from exports_pipeline.errors import CustomerFault, TransientFault
from exports_pipeline.windows import Window
from exports_pipeline.resources.posthog import MAX_EVENT_BYTES, event_cost
from exports_pipeline.sinks.posthog import mapping
from exports_pipeline.sinks.posthog.deliver import deliver_window
from exports_pipeline_tests.posthog_peers import Fault
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START
from exports_pipeline_tests.sinks.posthog.conftest import EXTRA_PROJECT, HUGE_NAME_BYTES, fast_client, integration
from exports_pipeline_tests.sinks.posthog.reference import NAMESPACE, expected_event, rows_sql

log = logging.getLogger("test.posthog")
WINDOW = Window(DAY_START, DAY_END)
BASE = "https://langfuse.example.com"


def _projects(source) -> list[str]:
    """The seeded projects (not the hand-made one)."""
    rows = source.query(f"SELECT DISTINCT project_id FROM {source.events_table} ORDER BY 1")
    return [r[0] for r in rows if r[0] != EXTRA_PROJECT]


def _deliver(source, peer, project, *, client=None, window=WINDOW, historical=False, url=None, **kw):
    return deliver_window(source, client or fast_client(peer.url), integration(project, peer.url), project_id=project,
                          window=window, run_id="run-1", historical=historical, log=log, langfuse_url=url, **kw)


def _expected(source, project, url=None, window=WINDOW) -> dict[str, dict]:
    rows = source.query_dicts(rows_sql(source.events_table),
                              {"project_id": project, "start": window.start, "end": window.end})
    return {e["uuid"]: e for e in (expected_event(r, project, "Shop", url) for r in rows)}


def _same(got, want, path="") -> None:
    """Field by field; decimals compared exactly through their shortest text."""
    if isinstance(want, Decimal):
        assert Decimal(str(got)) == want, path
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), (path, list(got), list(want))
        for key in want:
            _same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-9), path
    else:
        assert got == want and type(got) is type(want), (path, got, want)


@pytest.mark.parametrize("url", [None, BASE + "/api/auth"])
def test_every_event_matches_clickhouse_final_field_by_field(source, posthog_peer, url):
    project = _projects(source)[0]
    delivery = _deliver(source, posthog_peer, project, url=url, max_request_bytes=256 * 1024)
    expected = _expected(source, project, mapping.base_url(url) if url else None)
    assert posthog_peer.violations == []
    assert delivery.events == len(expected) == len(posthog_peer.events) > 1000
    assert set(posthog_peer.events) == set(expected) and max(posthog_peer.uuid_counts.values()) == 1
    for event_uuid, want in expected.items():
        _same(posthog_peer.events[event_uuid], want, event_uuid)
    # Another project's rows and the next day's never: every uuid is this project's in this window.
    assert delivery.requests == len(posthog_peer.batches) > 3  # the small request cap split the window
    assert all(b.raw_bytes <= 256 * 1024 and not b.historical for b in posthog_peer.batches)
    assert delivery.bytes == sum(b.gzip_bytes for b in posthog_peer.batches)
    assert delivery.events_cut == 0 and delivery.metadata()["events"] == delivery.events


def test_uuid_is_langfuse_uuidv5_computed_by_clickhouse(source):
    names = ["p-1-s", "", "proj-ä/🚀-'\"\\", "x" * 500]
    for name in names:
        project, _, span = name.partition("-")
        got = source.query(f"WITH {mapping._SHA} AS _sha SELECT {mapping.UUID_SQL} FROM (SELECT {{span:String}} AS span_id)",
                           {"uuid_namespace": mapping.UUID_NAMESPACE.replace("-", ""), "project_id": project,
                            "span": span})[0][0]
        assert got == str(uuid.uuid5(NAMESPACE, f"{project}-{span}"))
        assert uuid.UUID(got).version == 5 and uuid.UUID(got).variant == uuid.RFC_4122


def test_hand_made_rows_session_user_urls_units_and_the_cut_event(source, posthog_peer):
    delivery = _deliver(source, posthog_peer, EXTRA_PROJECT, url=BASE)
    expected = _expected(source, EXTRA_PROJECT, BASE)
    assert posthog_peer.violations == [] and delivery.events == 4 == len(posthog_peer.events)
    assert delivery.events_cut == 1
    by_span = {e["properties"]["langfuse_id"]: e for e in posthog_peer.events.values()}
    root = by_span["s-1"]["properties"]
    assert root["$session_id"] == "ph-sess-first"  # the first metadata value wins, as in Langfuse
    assert root["langfuse_user_url"] == f"{BASE}/project/{EXTRA_PROJECT}/users/u%2F%C3%A4%20b!*'()"
    assert by_span["s-1"]["properties"]["$set"] == {"langfuse_user_url": root["langfuse_user_url"]}
    assert root["langfuse_trace_name"] == "root op"  # a root without trace name: its own name
    assert (root["langfuse_latency"], root["langfuse_latency_seconds"], root["langfuse_time_to_first_token"]) == (
        1501, 1.501, 251)
    assert by_span["s-4"]["properties"]["langfuse_input_units"] == 18446744073709551615
    big = by_span["s-3"]
    assert event_cost(json.dumps(big, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_EVENT_BYTES
    name = big["properties"]["langfuse_observation_name"]
    assert name.startswith("x" * 1000) and "[cut by exports_pipeline:" in name and len(name) < HUGE_NAME_BYTES
    for span in ("s-1", "s-2", "s-4"):
        _same(by_span[span], expected[by_span[span]["uuid"]], span)
    want = expected[big["uuid"]]
    want["properties"]["langfuse_observation_name"] = name
    _same(big, want, "s-3")


def test_rerun_adds_no_new_uuid_and_historical_flag(source, posthog_peer):
    project = _projects(source)[1]
    first = _deliver(source, posthog_peer, project)
    uuids = set(posthog_peer.events)
    second = _deliver(source, posthog_peer, project, historical=True)
    assert set(posthog_peer.events) == uuids and first.events == second.events == len(uuids)
    assert set(posthog_peer.uuid_counts.values()) == {2}
    assert [b.historical for b in posthog_peer.batches] == [False] * first.requests + [True] * second.requests


def test_empty_window_sends_nothing(source, posthog_peer):
    empty = Window(DAY_START - dt.timedelta(days=30), DAY_START - dt.timedelta(days=29))
    delivery = _deliver(source, posthog_peer, _projects(source)[0], window=empty)
    assert (delivery.events, delivery.requests, posthog_peer.attempts) == (0, 0, [])


def test_interrupted_window_then_rerun_has_every_event_exactly_once(source, posthog_peer):
    project = _projects(source)[0]
    posthog_peer.fail_after(2, Fault(status=503))
    with pytest.raises(TransientFault, match="503") as caught:
        _deliver(source, posthog_peer, project, max_request_bytes=128 * 1024, client=fast_client(
            posthog_peer.url, attempts=2, concurrency=1))
    assert "gave up after 2 attempts" in str(caught.value)
    partial = set(posthog_peer.events)
    assert 0 < len(partial)
    posthog_peer.heal()
    _deliver(source, posthog_peer, project, max_request_bytes=128 * 1024)
    expected = _expected(source, project)
    assert set(posthog_peer.events) == set(expected)
    assert {u for u, n in posthog_peer.uuid_counts.items() if n > 1} == partial  # resent, same uuids


def test_429_waits_for_retry_after_then_delivers(source, posthog_peer):
    posthog_peer.plan(Fault(status=429, retry_after="1"))
    delivery = _deliver(source, posthog_peer, EXTRA_PROJECT, client=fast_client(posthog_peer.url, concurrency=1))
    assert delivery.events == 4 and delivery.retries == 1
    first, second = posthog_peer.attempts[:2]
    assert second - first >= 0.95  # the backoff alone would be at most 0.05 s


@pytest.mark.parametrize("fault", [Fault(status=500), Fault(status=502), Fault(status=408), Fault(drop=True),
                                   Fault(delay=1.5)], ids=["500", "502", "408", "dropped", "timeout"])
def test_transient_faults_are_retried(source, posthog_peer, fault):
    posthog_peer.plan(fault, fault)
    client = fast_client(posthog_peer.url, timeout=0.5, concurrency=1)
    delivery = _deliver(source, posthog_peer, EXTRA_PROJECT, client=client)
    assert delivery.events == 4 == len(posthog_peer.events) and delivery.retries == 2
    assert len(posthog_peer.attempts) == 3


@pytest.mark.parametrize("status", [400, 401, 403])
def test_customer_faults_are_not_retried_and_hide_the_key(source, posthog_peer, status):
    posthog_peer.plan(*[Fault(status=status, body=f"nope {posthog_peer.api_key}")] * 3)
    with pytest.raises(CustomerFault, match=f"HTTP {status}") as caught:
        _deliver(source, posthog_peer, EXTRA_PROJECT, client=fast_client(posthog_peer.url, concurrency=1))
    assert len(posthog_peer.attempts) == 1
    assert posthog_peer.api_key not in str(caught.value)


def test_wrong_key_is_the_customers_fault(source, posthog_peer):
    with pytest.raises(CustomerFault, match="refused the project API key"):
        _deliver(source, posthog_peer, EXTRA_PROJECT, client=fast_client(posthog_peer.url, key="phc_wrong"))


def test_unresolvable_host_is_the_customers_and_refused_connection_transient(source):
    with pytest.raises(CustomerFault, match="does not resolve"):
        deliver_window(source, fast_client("http://no-such-host.invalid"), integration(EXTRA_PROJECT, "http://x.y"),
                       project_id=EXTRA_PROJECT, window=WINDOW, run_id=None, historical=False, log=log)
    from exports_pipeline_tests.conftest import free_port

    with pytest.raises(TransientFault, match="connection failed"):
        deliver_window(source, fast_client(f"http://127.0.0.1:{free_port()}", attempts=2),
                       integration(EXTRA_PROJECT, "http://x.y"), project_id=EXTRA_PROJECT, window=WINDOW,
                       run_id=None, historical=False, log=log)


def test_long_window_in_subranges_small_blocks_and_requests_each_event_once(source, posthog_peer, monkeypatch):
    """A window read in time sub-ranges, as 7-row ClickHouse blocks, sent as requests of at most 64 KiB (so
    most requests join lines of several blocks): every event exactly once, field by field, under the caps."""
    from exports_pipeline.engine import lines

    monkeypatch.setattr(lines, "SUBRANGE_ROWS", 400)
    monkeypatch.setattr(lines, "BLOCK_ROWS", 7)
    project = _projects(source)[0]
    two_days = Window(DAY_START, DAY_END + dt.timedelta(days=1))
    delivery = _deliver(source, posthog_peer, project, window=two_days, max_request_bytes=64 * 1024)
    expected = _expected(source, project, window=two_days)
    assert posthog_peer.violations == [] and set(posthog_peer.uuid_counts.values()) == {1}
    assert delivery.events == len(expected) == len(posthog_peer.events) and delivery.requests > 10
    assert max(b.raw_bytes for b in posthog_peer.batches) <= 64 * 1024
    for uid, event in posthog_peer.events.items():
        _same(event, expected[uid], uid)


def test_request_body_shape(source, posthog_peer):
    """No `sent_at`, the key in the body, gzip: checked on the raw bytes the client builds."""
    client = fast_client(posthog_peer.url)
    body = client.body_prefix(True) + b'{"a":1}' + client.BODY_SUFFIX
    assert json.loads(body) == {"api_key": posthog_peer.api_key, "historical_migration": True, "batch": [{"a": 1}]}
    _deliver(source, posthog_peer, EXTRA_PROJECT)
    assert posthog_peer.violations == [] and gzip.compress(b"x")[:2] == b"\x1f\x8b"


def test_delivery_speed_is_reported(source, posthog_peer):
    started = time.monotonic()
    delivery = _deliver(source, posthog_peer, _projects(source)[0])
    assert 0 < delivery.seconds <= time.monotonic() - started and delivery.events_per_second > 0
