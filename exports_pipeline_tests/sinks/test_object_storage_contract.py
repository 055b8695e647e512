"""Object storage against the windowed-sink contract: S3 (moto behind the fault proxy), daily windows."""

from __future__ import annotations

import json

import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.sinks.object_storage.plugin import ObjectStorageSink
from exports_pipeline.state.models import BlobIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.sinks.contract import Harness, WindowedSinkContract

KEY = "4d" * 32


@pytest.fixture
def harness(seeded, tmp_path, s3_bucket, s3_client, fault_proxy):
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    box = SecretBox(KEY)

    def add(project: str) -> None:
        state.upsert_blob_integration(BlobIntegration(
            project_id=project, type="S3_COMPATIBLE", bucket_name=s3_bucket, prefix=f"{project}-exports/",
            endpoint=fault_proxy.url, force_path_style=True, access_key_id="testing",
            secret_access_key=box.encrypt("testing"), export_frequency="daily", file_types=("jsonl",)))

    def arrived(project: str, window) -> list[str]:
        stamp = f"{window.start:%Y-%m-%dT%H-%M-%SZ}_{window.end:%Y-%m-%dT%H-%M-%SZ}"
        key = f"{project}-exports/{project}/events/daily/{stamp}/manifest.json"
        try:
            manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
        except s3_client.exceptions.NoSuchKey:
            return []
        ids = []
        for f in manifest["files"]:
            body = s3_client.get_object(Bucket=s3_bucket, Key=f["key"])["Body"].read()
            ids += [json.loads(line)["span_id"] for line in body.splitlines() if line]
        return ids

    def fail_transiently() -> None:
        fault_proxy.fail("PutObject", nth=fault_proxy.count("PutObject") + 1, times=2, status=503, code="SlowDown")

    yield Harness(
        sink=ObjectStorageSink(box), clickhouse=seeded, state=state, frequency="daily",
        resources={"object_store": ObjectStoreResource(backoff_base_seconds=0.01, backoff_max_seconds=0.05)},
        add_integration=add, arrived=arrived, refuse=lambda: fault_proxy.fail_all(403, "AccessDenied"),
        heal=fault_proxy.rules.clear, fail_transiently=fail_transiently)
    state.dispose()


class TestObjectStorageContract(WindowedSinkContract):
    """Every test of the windowed-sink contract, run against this sink's harness."""
