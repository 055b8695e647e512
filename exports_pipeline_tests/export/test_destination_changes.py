"""A changed prefix or endpoint: earlier exports stay where they were written, and `export-objects delete`
acts where each object was written, never on a same-named object at the integration's new place."""

from __future__ import annotations

import boto3
import pytest

from exports_pipeline.commands import open_state
from exports_pipeline.sinks.object_storage.export import entity_type
from exports_pipeline.sinks.object_storage.plugin import export_partition
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import get_settings
from exports_pipeline_tests.export.readback import clickhouse_rows, read_file
from exports_pipeline_tests.export.test_blob_export import WINDOW
from exports_pipeline_tests.cli_harness import cli_in
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START

KEY = "5c" * 32
PARTITION = "2026-11-02|proj-1"


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    with cli_in(tmp_path, monkeypatch, capsys, key=KEY, env={"EXPORTS_SECRET_ACCESS_KEY": "testing"}) as runner:
        yield runner


def client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    listed = client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def export(seeded, run_id: str):
    settings = get_settings()
    state = open_state(settings)
    from exports_pipeline.commands import optional_box

    return export_partition(clickhouse=seeded, object_store=ObjectStoreResource(backoff_base_seconds=0.01),
                            state=state, box=optional_box(settings), frequency="daily", project_id="proj-1",
                            window=WINDOW, partition_key=PARTITION, run_id=run_id)


def add(cli, bucket: str, endpoint: str, prefix: str) -> None:
    code, _, err = cli("integrations", "add-blob", "--project", "proj-1", "--destination", f"s3://{bucket}/{prefix}",
                       "--frequency", "daily", "--format", "jsonl", "--mode", "from_custom_date", "--start-date",
                       "2026-11-01", "--endpoint", endpoint, "--force-path-style", "--access-key-id", "testing")
    assert code == 0, err


def test_prefix_change_keeps_the_earlier_complete_export(seeded, cli, moto_endpoint, s3_bucket):
    add(cli, s3_bucket, moto_endpoint, "old/")
    export(seeded, "run-1")
    old = keys(moto_endpoint, s3_bucket, "old/")
    assert len(old) == 2  # one JSONL file and the manifest

    code, out, _ = cli("integrations", "update", "--project", "proj-1", "--destination", f"s3://{s3_bucket}/new/")
    assert code == 0
    assert f"earlier exports stay where they were written: s3://{s3_bucket}/old/" in out
    assert "2 object(s)" in out and "export-objects delete --project proj-1" in out

    export(seeded, "run-2")
    assert keys(moto_endpoint, s3_bucket, "old/") == old  # not deleted as "stale"
    assert len(keys(moto_endpoint, s3_bucket, "new/")) == 2
    reference = clickhouse_rows(seeded, "proj-1", DAY_START, DAY_END)
    for key in old + keys(moto_endpoint, s3_bucket, "new/"):
        if key.endswith(".jsonl"):
            body = client(moto_endpoint).get_object(Bucket=s3_bucket, Key=key)["Body"].read()
            assert read_file(body, "jsonl", "none") == reference
    logged = open_state(get_settings()).list_event_log("proj-1", entity_type("daily"), PARTITION)
    assert sorted(e.bucket_path for e in logged) == sorted(old + keys(moto_endpoint, s3_bucket, "new/"))
    assert {e.prefix for e in logged} == {"old/", "new/"}


def test_delete_after_an_endpoint_change_acts_where_objects_were_written(seeded, cli, moto_endpoint, s3_bucket,
                                                                         other_s3_endpoint):
    add(cli, s3_bucket, moto_endpoint, "exports/")
    export(seeded, "run-1")
    ours = keys(moto_endpoint, s3_bucket)
    assert len(ours) == 2
    # The customer moves to another provider: a bucket of the same name there holds someone else's object
    # under one of our keys.
    other = client(other_s3_endpoint)
    other.create_bucket(Bucket=s3_bucket)
    other.put_object(Bucket=s3_bucket, Key=ours[0], Body=b"not ours")
    assert cli("integrations", "update", "--project", "proj-1", "--endpoint", other_s3_endpoint)[0] == 0

    code, out, err = cli("export-objects", "delete", "--project", "proj-1")
    assert (code, err) == (0, "")
    assert f"s3://{s3_bucket} at {moto_endpoint}: 2 object(s)" in out  # the dry run shows the place

    code, out, err = cli("export-objects", "delete", "--project", "proj-1", "--yes")
    assert (code, err) == (0, "")
    assert "deleted 2 object(s) and 2 event_log row(s)" in out
    assert keys(moto_endpoint, s3_bucket) == []  # gone where they were written
    assert other.get_object(Bucket=s3_bucket, Key=ours[0])["Body"].read() == b"not ours"  # foreign: untouched
    assert open_state(get_settings()).list_event_log("proj-1") == []
