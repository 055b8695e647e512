"""deliver_window end to end: ClickHouse (chDB) -> mapping -> gzip -> HTTP -> the contract-enforcing receiver,
every received event compared field by field with ClickHouse FINAL."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from exports_pipeline.crypto import SecretBox, generate_key
from exports_pipeline.errors import CustomerFault, TransientFault
from exports_pipeline.events.ddl import create_events_table
from exports_pipeline.windows import Window
from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client
from exports_pipeline.resources.mixpanel import ClientSettings, MixpanelClient, client_for
from exports_pipeline.sinks.mixpanel import mapping
from exports_pipeline.sinks.mixpanel.deliver import deliver_window, fit_event
from exports_pipeline.state.models import MixpanelIntegration
from exports_pipeline_tests.mixpanel_peers import SA_PROJECT_ID, SA_SECRET, SA_USER, TOKEN, Fault
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START
from exports_pipeline_tests.sinks.mixpanel.reference import BAD_IDS, expected_event, source_rows

WINDOW = Window(DAY_START, DAY_END)
BASE = "https://langfuse.example.test"
FAST = ClientSettings(backoff_base_seconds=0.05, backoff_max_seconds=0.2, jitter_min_seconds=0,
                      jitter_max_seconds=0.01, max_attempts=4, read_timeout=2)
BOX = SecretBox(generate_key())


def _integration(peer, project: str = "proj-1", **kw) -> MixpanelIntegration:
    if "mixpanel_service_account_username" not in kw:
        kw.setdefault("encrypted_mixpanel_project_token", BOX.encrypt(TOKEN))
    return MixpanelIntegration(project, endpoint=peer.url, **kw)


def _deliver(ch, peer, project: str = "proj-1", window: Window = WINDOW, settings: ClientSettings = FAST,
             integration: MixpanelIntegration | None = None, **kw):
    integration = integration or _integration(peer, project)
    with client_for(integration, BOX, settings) as client:
        return deliver_window(ch, client, integration, project_id=project, window=window, run_id="run-1",
                              historical=False, **kw)


def _compare(received: list[dict], rows: list[dict], project: str, base: str | None) -> None:
    expected = {e["properties"]["$insert_id"]: e for e in (expected_event(r, project, base) for r in rows)}
    got = {e["properties"]["$insert_id"]: e for e in received}
    assert len(got) == len(received) == len(expected)
    assert got.keys() == expected.keys()
    for insert_id, event in got.items():
        want = expected[insert_id]
        assert list(event["properties"]) == list(want["properties"]), insert_id  # Langfuse's key order
        assert event == want, insert_id


def test_every_event_matches_clickhouse_final_field_by_field(seeded, mixpanel_peer):
    """The seeded day of proj-1 (hard text, updates, deletions, long names): each event Langfuse's mapping of
    the latest version, the other day and the other project never sent, nothing left for Mixpanel to cut."""
    delivery = _deliver(seeded, mixpanel_peer, langfuse_url=BASE + "/")
    rows = source_rows(seeded, "proj-1", DAY_START, DAY_END)
    assert len(rows) > 1000
    _compare(mixpanel_peer.received.all_events(), rows, "proj-1", BASE)
    assert (delivery.events, delivery.imported, delivery.failed) == (len(rows), len(rows), 0)
    assert delivery.complete and delivery.requests == 1
    assert delivery.strings_cut == delivery.events_cut > 0  # the seeder's 540-character names
    assert mixpanel_peer.received.truncated_strings == 0
    assert all(r["query"] == {"strict": "1"} for r in mixpanel_peer.received.requests)


def test_redelivery_sends_the_same_insert_ids(seeded, mixpanel_peer):
    """A re-run resends the window with identical ids (Mixpanel deduplicates on them): no new id appears."""
    first = _deliver(seeded, mixpanel_peer)
    ids = set(mixpanel_peer.received.events)
    again = _deliver(seeded, mixpanel_peer)
    assert set(mixpanel_peer.received.events) == ids and first.events == again.events == len(ids)
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in mixpanel_peer.received.events.values())


def test_empty_window_sends_nothing(seeded, mixpanel_peer):
    empty = Window(DAY_START - dt.timedelta(days=30), DAY_START - dt.timedelta(days=29))
    delivery = _deliver(seeded, mixpanel_peer, window=empty)
    assert (delivery.events, delivery.requests, delivery.complete) == (0, 0, True)
    assert mixpanel_peer.received.requests == []


def test_caps_per_request_and_bounded_flight(seeded, mixpanel_peer):
    """With a 200 kB request cap every request stays under it and under 2,000 events; the receiver enforces
    both caps, gzip and strict, and each event arrives once."""
    settings = ClientSettings(max_request_bytes=200_000, max_in_flight=3)
    delivery = _deliver(seeded, mixpanel_peer, settings=settings)
    sizes = [r for r in mixpanel_peer.received.requests if "events" in r]
    assert len(sizes) == delivery.requests > 5
    assert all(r["events"] <= 2000 for r in sizes)
    assert len(mixpanel_peer.received.events) == delivery.events == delivery.imported
    assert delivery.bytes <= 200_000 * delivery.requests


def test_service_account_auth_and_project_id(seeded, mixpanel_peer):
    integration = _integration(mixpanel_peer, mixpanel_service_account_username=SA_USER,
                               encrypted_mixpanel_service_account_secret=BOX.encrypt(SA_SECRET),
                               mixpanel_project_id=SA_PROJECT_ID)
    delivery = _deliver(seeded, mixpanel_peer, integration=integration)
    assert delivery.complete and {r["query"]["project_id"] for r in mixpanel_peer.received.requests} == {SA_PROJECT_ID}


def test_wrong_token_is_the_customers_fault_and_not_retried(seeded, mixpanel_peer):
    integration = MixpanelIntegration("proj-1", BOX.encrypt("wrong-token"), endpoint=mixpanel_peer.url)
    with pytest.raises(CustomerFault) as caught:
        _deliver(seeded, mixpanel_peer, integration=integration)
    assert caught.value.code == "401" and "wrong-token" not in str(caught.value)
    assert len(mixpanel_peer.received.requests) == 1


def test_interrupted_window_rerun_ends_with_every_event_once_by_id(seeded, mixpanel_peer):
    """Requests 2 onwards fail for longer than the retries last: the window fails transiently (the cursor
    would not move); the re-run delivers everything, each id present, none new."""
    settings = ClientSettings(max_request_bytes=300_000, max_in_flight=1, backoff_base_seconds=0.01,
                              backoff_max_seconds=0.02, jitter_min_seconds=0, jitter_max_seconds=0, max_attempts=3)
    integration = _integration(mixpanel_peer)
    with client_for(integration, BOX, settings) as client:
        original = client.send

        def send_then_fail(lines, cancel=None):
            if mixpanel_peer.received.requests:  # after the first request, the receiver goes down for good
                mixpanel_peer.script(*[Fault(status=503)] * 3)
            return original(lines, cancel=cancel)

        client.send = send_then_fail
        with pytest.raises(TransientFault, match="gave up after 3 attempts"):
            deliver_window(seeded, client, integration, project_id="proj-1", window=WINDOW, run_id="r1",
                           historical=False)
    first_ids = set(mixpanel_peer.received.events)
    assert first_ids
    delivery = _deliver(seeded, mixpanel_peer)
    rows = source_rows(seeded, "proj-1", DAY_START, DAY_END)
    assert set(mixpanel_peer.received.events) == {expected_event(r, "proj-1")["properties"]["$insert_id"]
                                                  for r in rows} >= first_ids
    assert delivery.complete


# ------------------------------------------------------------------------------------------- crafted rows


@pytest.fixture
def crafted(chdb_path: str):
    """Rows made to hit every rule: deny-listed ids, session metadata, caps, invalid UTF-8, URL escaping,
    window edges, deletions, newer versions and another project."""
    database = f"mp_{uuid.uuid4().hex[:10]}"
    table = f"{database}.events_full"
    t0 = DAY_START + dt.timedelta(hours=1)
    bad = sorted(BAD_IDS) + [" NULL ", "\tUndefined\n", "\xa0Anonymous\u3000", "LMY47D", "N/A"]
    rows = []

    def row(span: str, **kw):
        base = dict(project_id="proj-x", trace_id=f"tr-{span}", span_id=span, parent_span_id="p", start_time=t0,
                    name=f"obs {span}", type="SPAN", user_id="", session_id="", tags=[], metadata_names=[],
                    metadata_values=[], event_ts=t0, is_deleted=0)
        base.update(kw)
        rows.append(base)

    for i, user in enumerate(bad):
        row(f"bad-{i}", user_id=user)
    row("alice", user_id=" Alice ", session_id="sess-1", trace_name="",
        metadata_names=["$mixpanel_session_id", "x", "$mixpanel_session_id"], metadata_values=["first", "y", "last"])
    row("only-meta", metadata_names=["$mixpanel_session_id"], metadata_values=["mp-sess"])
    row("root", parent_span_id="", trace_name="", name="root name", end_time=t0 + dt.timedelta(milliseconds=1234),
        completion_start_time=t0 + dt.timedelta(microseconds=250_999),
        cost_details={"total": "0.000123456789", "input": "1"}, usage_details={"input": 7, "output": 8, "total": 15})
    row("long", name="é" * 300 + "🚀", user_id="u" * 300, tags=[f"t{i}" for i in range(300)] + ["x" * 400],
        release="r" * 256, trace_name="\U0001F680" * 256)
    row("a b/!*'()é?&=", trace_id="t/ü ?#", user_id="us er/é")
    row("at-start", start_time=DAY_START, user_id="user-1")
    row("at-end", start_time=DAY_END)  # belongs to the next window
    row("deleted", is_deleted=1, event_ts=t0 + dt.timedelta(seconds=1))
    row("versioned", name="old", event_ts=t0)
    row("versioned", name="new", event_ts=t0 + dt.timedelta(seconds=5))
    row("other", project_id="proj-y")
    with chdb_client(chdb_path) as client:
        client.command(f"CREATE DATABASE {database}")
        create_events_table(client, table)
        names = list(rows[0]) + ["end_time", "completion_start_time", "cost_details", "usage_details", "release",
                                 "trace_name"]
        data = [[r.get(n, {} if n.endswith("details") else None if n.endswith("time") else "") for n in names]
                for r in rows]
        client.insert(table, data, column_names=names)
        # invalid UTF-8 (bytes no driver would send as text), in a name and a tag
        client.command(f"INSERT INTO {table} (project_id, trace_id, span_id, parent_span_id, start_time, name, "
                       "type, tags, event_ts, is_deleted) SELECT 'proj-x', 'tr-bin', 'bin', 'p', {t:DateTime64(6)}, "
                       "concat('ok', unhex('FF'), 'end'), 'SPAN', [concat('t', unhex('C3'))], {t:DateTime64(6)}, 0",
                       parameters={"t": t0})
    yield ClickHouseResource(url=f"chdb://{chdb_path}", events_table=table)
    with chdb_client(chdb_path) as client:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def test_crafted_rows_every_rule(crafted, mixpanel_peer):
    delivery = _deliver(crafted, mixpanel_peer, project="proj-x", langfuse_url=BASE)
    events = {e["properties"]["langfuse_id"]: e["properties"] for e in mixpanel_peer.received.all_events()}
    assert delivery.complete and mixpanel_peer.received.truncated_strings == 0
    # every deny-listed id: accepted by the receiver (which refuses them as distinct_id), sent as ""
    bad = [p for span, p in events.items() if span.startswith("bad-")]
    assert len(bad) == len(BAD_IDS) + 5
    assert all(p["distinct_id"] == "" and "$user_id" not in p and p["langfuse_user_id"] for p in bad)
    alice = events["alice"]
    assert (alice["distinct_id"], alice["$user_id"], alice["session_id"]) == (" Alice ", " Alice ", "last")
    assert events["only-meta"]["session_id"] == "mp-sess" and "session_id" not in events["bad-0"]
    root = events["root"]
    assert (root["langfuse_trace_name"], root["langfuse_latency"], root["langfuse_latency_seconds"],
            root["langfuse_time_to_first_token"], root["langfuse_cost_usd"], root["langfuse_total_units"]) == \
        ("root name", 1234, 1.234, 250, 0.000123456789, 15)
    long = events["long"]
    assert long["langfuse_observation_name"] == "é" * 255 and len(long["langfuse_tags"]) == 254
    assert long["distinct_id"] == "u" * 255 and long["langfuse_trace_name"] == "\U0001F680" * 255
    assert events["a b/!*'()é?&="]["langfuse_url"] == \
        f"{BASE}/project/proj-x/traces/t%2F%C3%BC%20%3F%23?observation=a%20b%2F!*'()%C3%A9%3F%26%3D"
    assert events["bin"]["langfuse_observation_name"] == "ok\ufffdend" and events["bin"]["langfuse_tags"] == ["t\ufffd"]
    assert events["versioned"]["langfuse_observation_name"] == "new"
    assert "at-start" in events and not {"at-end", "deleted", "other"} & events.keys()
    assert (delivery.strings_cut, delivery.arrays_cut, delivery.utf8_repaired, delivery.events_cut) == (1, 1, 1, 2)
    # and field by field against the independent reference (all but the invalid-UTF-8 row, checked above)
    rows = [r for r in source_rows(crafted, "proj-x", DAY_START, DAY_END) if r["span_id"] != "bin"]
    _compare([e for e in mixpanel_peer.received.all_events() if e["properties"]["langfuse_id"] != "bin"], rows,
             "proj-x", BASE)


def test_insert_id_is_python_uuid5(crafted, mixpanel_peer):
    """ClickHouse's UUIDv5 (SHA-1, version and variant bits) equals Python's uuid.uuid5 for every span id,
    non-ASCII ones included; the ids fit Mixpanel's 36 bytes of [A-Za-z0-9-]."""
    _deliver(crafted, mixpanel_peer, project="proj-x")
    for event in mixpanel_peer.received.all_events():
        props = event["properties"]
        assert props["$insert_id"] == str(uuid.uuid5(mapping.INSERT_ID_NAMESPACE, f"proj-x-{props['langfuse_id']}"))
        assert mapping.insert_id("proj-x", props["langfuse_id"]) == props["$insert_id"]


def test_oversized_event_is_shrunk_to_fit():
    """The mapping's caps keep events far under 1 MB; should one ever exceed it, its tags are shortened."""
    line = json.dumps({"event": "e", "properties": {"$insert_id": "x", "langfuse_tags": ["y" * 9000] * 300}}).encode()
    assert len(line) > mapping.EVENT_MAX_BYTES
    fitted = json.loads(fit_event(line))
    assert len(json.dumps(fitted).encode()) < mapping.EVENT_MAX_BYTES and 0 < len(fitted["properties"]["langfuse_tags"])


def test_client_refuses_a_request_over_the_caps():
    client = MixpanelClient("http://127.0.0.1:9", username="t", settings=ClientSettings(max_request_bytes=10))
    with pytest.raises(ValueError, match="exceeds the caps"):
        client.send([b"x" * 20])


def test_long_window_is_read_in_subranges_each_event_once(seeded, mixpanel_peer, monkeypatch):
    """A window with more stored rows than SUBRANGE_ROWS is read in time sub-ranges: still every event once,
    field by field, across both seeded days."""
    from exports_pipeline.engine import lines

    monkeypatch.setattr(lines, "SUBRANGE_ROWS", 400)
    two_days = Window(DAY_START, DAY_END + dt.timedelta(days=1))
    delivery = _deliver(seeded, mixpanel_peer, window=two_days)
    rows = source_rows(seeded, "proj-1", two_days.start, two_days.end)
    _compare(mixpanel_peer.received.all_events(), rows, "proj-1", None)
    assert delivery.complete and delivery.events == len(rows)
