"""The `/import` client against the local receiver: regions, caps, partial 400s and every fault class."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from exports_pipeline.errors import ConfigError, CustomerFault, TransientFault
from exports_pipeline.resources.mixpanel import (
    ClientSettings,
    MixpanelClient,
    MixpanelResource,
    client_for,
    import_url,
    region_base_url,
)
from exports_pipeline.sinks.mixpanel.mapping import insert_id
from exports_pipeline_tests.conftest import free_port
from exports_pipeline_tests.mixpanel_peers import TOKEN, Fault

FAST = dict(backoff_base_seconds=0.02, backoff_max_seconds=0.05, jitter_min_seconds=0, jitter_max_seconds=0.01,
            max_attempts=3, read_timeout=1.0)
NOW_MS = int(time.time() * 1000) - 60_000


def event(i: int, **props) -> bytes:
    body = {"time": NOW_MS, "distinct_id": f"user-{i}", "$insert_id": insert_id("p", f"s{i}"), **props}
    return json.dumps({"event": "[Langfuse] Observation", "properties": body}).encode()


def client(peer, token: str = TOKEN, **settings) -> MixpanelClient:
    return MixpanelClient(peer.url, username=token, settings=ClientSettings(**{**FAST, **settings}))


@pytest.mark.parametrize("region, host", [("api", "api.mixpanel.com"), ("api-eu", "api-eu.mixpanel.com"),
                                          ("api-in", "api-in.mixpanel.com")])
def test_region_urls(region, host):
    assert import_url(region_base_url(region)) == f"https://{host}/import?strict=1"
    assert import_url(region_base_url(region), "12345") == f"https://{host}/import?strict=1&project_id=12345"


def test_unknown_region_and_endpoint_override():
    with pytest.raises(ConfigError, match="api, api-eu, api-in"):
        region_base_url("api-us")
    assert import_url("http://proxy.internal:8080/mixpanel/") == "http://proxy.internal:8080/mixpanel/import?strict=1"


def test_all_in_and_gzip_on_the_wire(mixpanel_peer):
    totals = client(mixpanel_peer).send([event(i) for i in range(50)])
    assert (totals.requests, totals.events, totals.imported, totals.failed, totals.retries) == (1, 50, 50, 0, 0)
    assert totals.bytes_sent < totals.bytes_uncompressed
    assert len(mixpanel_peer.received.events) == 50


def test_partial_400_records_failures_and_is_never_retried(mixpanel_peer):
    """strict=1: the valid events are in, the refused ones come back with their $insert_id; no retry."""
    lines = [event(0), event(1, distinct_id="anonymous"), event(2, time=1000), event(3)]
    totals = client(mixpanel_peer).send(lines)
    assert (totals.requests, totals.imported, totals.failed, totals.retries) == (1, 2, 2, 0)
    assert [r.field for r in totals.failed_samples] == ["properties.distinct_id", "properties.time"]
    assert totals.failed_samples[0].insert_id == insert_id("p", "s1")
    assert len(mixpanel_peer.received.requests) == 1 and len(mixpanel_peer.received.events) == 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_customer_faults_are_not_retried(mixpanel_peer, status):
    mixpanel_peer.script(Fault(status=status, body={"error": f"refused, token {TOKEN}"}))
    with pytest.raises(CustomerFault) as caught:
        client(mixpanel_peer).send([event(0)])
    assert caught.value.code == str(status) and TOKEN not in str(caught.value)
    assert len(mixpanel_peer.received.requests) == 1


def test_wrong_token_is_401(mixpanel_peer):
    with pytest.raises(CustomerFault, match="401.*Invalid credentials"):
        client(mixpanel_peer, token="not-the-token").send([event(0)])


@pytest.mark.parametrize("fault", [Fault(status=429), Fault(status=502), Fault(status=503), Fault(status=500),
                                   Fault(status=408), Fault(drop=True), Fault(delay=1.5)],
                         ids=["429", "502", "503", "500", "408", "dropped", "timeout"])
def test_transient_faults_are_retried_then_succeed(mixpanel_peer, fault):
    mixpanel_peer.script(fault, fault)
    totals = client(mixpanel_peer).send([event(0), event(1)])
    assert (totals.retries, totals.imported) == (2, 2)
    assert len(mixpanel_peer.received.events) == 2


def test_transient_fault_gives_up_after_max_attempts(mixpanel_peer):
    mixpanel_peer.script(*[Fault(status=503)] * 3)
    with pytest.raises(TransientFault, match="gave up after 3 attempts") as caught:
        client(mixpanel_peer).send([event(0)])
    assert caught.value.code == "503" and not mixpanel_peer.received.events


def test_retry_after_is_honoured(mixpanel_peer):
    """A 429 saying Retry-After: 1 waits at least a second although the backoff alone is 20 ms."""
    mixpanel_peer.script(Fault(status=429, retry_after="1"))
    client(mixpanel_peer).send([event(0)])
    first, second = (r["at"] for r in mixpanel_peer.received.requests)
    assert second - first >= 1.0


def test_backoff_schedule_follows_mixpanel():
    """2 s doubling to 60 s, plus 1-5 s of jitter; Retry-After is a floor."""
    s = ClientSettings()
    for attempt, base in ((1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (9, 60)):
        assert base + 1 <= s.delay(attempt, None) <= base + 5
    assert 90 + 1 <= s.delay(1, 90.0) <= 90 + 5


def test_413_splits_the_request(mixpanel_peer):
    mixpanel_peer.script(Fault(status=413))
    totals = client(mixpanel_peer).send([event(i) for i in range(10)])
    assert (totals.splits, totals.imported, totals.requests) == (1, 10, 3)


def test_connection_refused_is_transient():
    port = free_port()
    with pytest.raises(TransientFault, match="connection failed"):
        MixpanelClient(f"http://127.0.0.1:{port}", username=TOKEN, settings=ClientSettings(**FAST)).send([event(0)])


def test_unresolvable_host_is_the_customers_after_retries():
    c = MixpanelClient("http://no-such-host.invalid", username=TOKEN, settings=ClientSettings(**FAST))
    with pytest.raises(CustomerFault, match="does not resolve"):
        c.send([event(0)])


def test_redirect_is_the_customers(mixpanel_peer):
    mixpanel_peer.script(Fault(status=301, body={}))
    with pytest.raises(CustomerFault, match="redirects"):
        client(mixpanel_peer).send([event(0)])


def test_endpoint_password_is_masked_in_messages():
    port = free_port()
    c = MixpanelClient(f"http://user:hunter2-pw@127.0.0.1:{port}", username=TOKEN, settings=ClientSettings(**FAST))
    with pytest.raises(TransientFault) as caught:
        c.send([event(0)])
    assert "hunter2-pw" not in str(caught.value) and "***" in str(caught.value)
    assert "hunter2-pw" not in repr(c) and TOKEN not in repr(c)


def test_sender_bounds_requests_in_flight(mixpanel_peer):
    """Never more than max_in_flight requests at the receiver at once; the first fault stops the rest."""
    inside, peak, lock = [0], [0], threading.Lock()
    original = mixpanel_peer.handle

    def slow(*args):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.05)
        try:
            return original(*args)
        finally:
            with lock:
                inside[0] -= 1

    mixpanel_peer.handle = slow
    with client(mixpanel_peer, max_in_flight=3).sender() as sender:
        for i in range(12):
            sender.submit([event(i)])
        totals = sender.finish()
    assert totals.requests == 12 and peak[0] == 3


def test_sender_raises_the_first_fault(mixpanel_peer):
    mixpanel_peer.script(Fault(status=401))
    with pytest.raises(CustomerFault), client(mixpanel_peer, max_in_flight=2).sender() as sender:
        for i in range(20):
            sender.submit([event(i)])
        sender.finish()
    assert len(mixpanel_peer.received.requests) < 20


def test_resource_builds_the_integrations_client(mixpanel_peer):
    from exports_pipeline.crypto import SecretBox, generate_key
    from exports_pipeline.errors import DeploymentFault
    from exports_pipeline.state.models import MixpanelIntegration

    box = SecretBox(generate_key())
    integration = MixpanelIntegration("p", box.encrypt(TOKEN), mixpanel_region="api-eu")
    with MixpanelResource(max_in_flight=2).client(integration, box) as c:
        assert c.url == "https://api-eu.mixpanel.com/import?strict=1" and c.settings.max_in_flight == 2
    with pytest.raises(DeploymentFault, match="ENCRYPTION_KEY"):
        client_for(integration, SecretBox(generate_key()))


def test_silent_server_times_out():
    """A server that accepts the connection and never answers: a timeout, transient."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        c = MixpanelClient(f"http://127.0.0.1:{srv.getsockname()[1]}", username=TOKEN,
                           settings=ClientSettings(**{**FAST, "read_timeout": 0.3, "max_attempts": 2}))
        with pytest.raises(TransientFault, match="did not answer"):
            c.send([event(0)])
