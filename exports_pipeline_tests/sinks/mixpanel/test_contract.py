"""Mixpanel against the windowed-sink contract: the engine's runner with the Mixpanel plug-in, the test
receiver (which enforces Mixpanel's /import contract) and the seeded events."""

from __future__ import annotations

import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline.resources.mixpanel import MixpanelResource
from exports_pipeline.sinks.mixpanel.plugin import MixpanelSink
from exports_pipeline.state.models import MixpanelIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.mixpanel_peers import TOKEN, Fault
from exports_pipeline_tests.sinks.contract import Harness, WindowedSinkContract

KEY = "8c" * 32


@pytest.fixture
def harness(seeded, tmp_path, mixpanel_peer):
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    box = SecretBox(KEY)

    def add(project: str) -> None:
        state.upsert_mixpanel_integration(MixpanelIntegration(
            project_id=project, encrypted_mixpanel_project_token=box.encrypt(TOKEN), endpoint=mixpanel_peer.url))

    def arrived(project: str, window) -> list[str]:
        start, end = window.start.timestamp() * 1000, window.end.timestamp() * 1000
        return [e["properties"]["langfuse_id"] for e in mixpanel_peer.received.all_events()
                if e["properties"]["langfuse_project_id"] == project and start <= e["properties"]["time"] < end]

    yield Harness(
        sink=MixpanelSink(box), clickhouse=seeded, state=state, frequency="daily",
        resources={"mixpanel": MixpanelResource(max_attempts=4, backoff_base_seconds=0.01, backoff_max_seconds=0.05,
                                                jitter_min_seconds=0.0, jitter_max_seconds=0.01)},
        add_integration=add, arrived=arrived,
        refuse=lambda: mixpanel_peer.script(*[Fault(status=401)] * 50), heal=mixpanel_peer._faults.clear,
        fail_transiently=lambda: mixpanel_peer.script(Fault(status=503), Fault(status=502)))
    state.dispose()


class TestMixpanelContract(WindowedSinkContract):
    """Every test of the windowed-sink contract, run against this sink's harness."""
