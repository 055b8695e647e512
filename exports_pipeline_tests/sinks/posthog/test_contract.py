"""PostHog against the windowed-sink contract: the engine's runner with the PostHog plug-in, the test
receiver (which enforces PostHog's contract) and the seeded events."""

from __future__ import annotations

import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline.resources.posthog import PostHogResource
from exports_pipeline.sinks.posthog.plugin import PostHogSink
from exports_pipeline.state.models import PostHogIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline.windows import iso
from exports_pipeline_tests.posthog_peers import API_KEY, Fault
from exports_pipeline_tests.sinks.contract import Harness, WindowedSinkContract

KEY = "6b" * 32


@pytest.fixture
def harness(seeded, tmp_path, posthog_peer):
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    box = SecretBox(KEY)

    def add(project: str) -> None:
        state.upsert_posthog_integration(PostHogIntegration(
            project_id=project, encrypted_posthog_api_key=box.encrypt(API_KEY), posthog_host_name=posthog_peer.url))

    def arrived(project: str, window) -> list[str]:
        start, end = iso(window.start), iso(window.end)
        return [e["properties"]["langfuse_id"] for e in posthog_peer.events.values()
                if e["properties"]["langfuse_project_id"] == project and start <= _ts(e) < end]

    yield Harness(
        sink=PostHogSink(box), clickhouse=seeded, state=state, frequency="daily",
        resources={"posthog": PostHogResource(max_attempts=4, backoff_base_seconds=0.01, backoff_max_seconds=0.05,
                                              timeout_seconds=5)},
        add_integration=add, arrived=arrived,
        refuse=lambda: posthog_peer.fail_after(0, Fault(status=401)), heal=posthog_peer.heal,
        fail_transiently=lambda: posthog_peer.plan(Fault(status=503), Fault(status=502)))
    state.dispose()


def _ts(event: dict) -> str:
    """The event's timestamp in the manifests' ISO form (microseconds, Z), for window comparisons."""
    text = event["timestamp"].replace("+00:00", "Z")
    head, _, frac = text.rstrip("Z").partition(".")
    return f"{head}.{(frac + '000000')[:6]}Z"


class TestPostHogContract(WindowedSinkContract):
    """Every test of the windowed-sink contract, run against this sink's harness."""
