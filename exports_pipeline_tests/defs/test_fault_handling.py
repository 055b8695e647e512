"""Who is blamed when a partition run fails, through the Dagster asset: an outage is transient (retried,
never disabling), only what the server states or a name that does not resolve is the customer's, and the
deployment's faults (our ENCRYPTION_KEY, our events table) fail at once without touching the integration.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time

import dagster as dg
import pytest

from exports_pipeline.crypto import SecretBox, generate_key
from exports_pipeline.engine import assets as blob_storage
from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import get_settings
from exports_pipeline.state.models import BlobIntegration, blob_cursor_sink
from exports_pipeline_tests.defs.harness import add_local, export_asset, export_env, shorten_step_retries
from exports_pipeline_tests.export.readback import clickhouse_rows, read_file

DAY1 = "2026-11-02"  # a Monday: the weekly window of that day holds both seeded days
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
OUTAGE_SECONDS = 30


@pytest.fixture
def env(seeded, tmp_path, monkeypatch):
    # integrations without keys use the default credential chain (moto accepts any key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with export_env(seeded, tmp_path) as env:
        yield env


@pytest.fixture
def quick_step_retries(monkeypatch):
    shorten_step_retries(monkeypatch, 0.2)


def shortest_retry_span(policy: dg.RetryPolicy, draws: int = 2000) -> float:
    """The least time the step's retries waited in `draws` tries of its jitter."""
    return min(sum(policy.calculate_delay(n) for n in range(1, policy.max_retries + 1)) for _ in range(draws))


def test_step_retries_always_outlast_a_30_second_outage():
    """Full jitter could draw three waits near zero and give up within seconds; +-10 s cannot."""
    assert shortest_retry_span(blob_storage.RETRY_POLICY) >= 80 - 1e-9


def add_s3(env, endpoint: str, bucket: str = "some-bucket", frequency: str = "daily", **kw) -> BlobIntegration:
    integ = BlobIntegration(project_id="proj-1", type="S3_COMPATIBLE", bucket_name=bucket, endpoint=endpoint,
                            force_path_style=True, export_frequency=frequency, file_types=("jsonl",), **kw)
    env["state"].upsert_blob_integration(integ)
    env["instance"].add_dynamic_partitions(f"blob_storage_projects_{frequency}", ["proj-1"])
    return integ


def materialize(env, key: str, frequency: str = "daily", **resources) -> dg.ExecuteInProcessResult:
    return dg.materialize([export_asset(frequency)], partition_key=key, instance=env["instance"],
                          resources={**env["resources"], **resources}, raise_on_error=False)


def events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def fault_of(env, result) -> str | None:
    """The fault class the run recorded in its tags (`exports/fault`)."""
    return env["instance"].get_run_by_id(result.run_id).tags.get(blob_storage.FAULT_TAG)


def failure_text(result) -> str:
    (failure,) = events(result, "STEP_FAILURE")
    data = failure.step_failure_data
    return f"{data.user_failure_data.description if data.user_failure_data else ''} {data.error.message}"


# ----------------------------------------------------------------------------------------------- outages


def test_s3_gone_for_30_seconds_mid_upload_is_survived_and_the_integration_stays_enabled(
        env, seeded, s3_bucket, s3_client, fault_proxy, caplog, monkeypatch):
    """The server goes away at the second part of a multipart upload: open connections are cut and new
    ones refused for 30 s. With the shipped retries (5 per request, 3 step retries; the step's base delay
    halved to 5 s, whose retries still always span 40 s) the run succeeds; nothing calls the outage the
    customer's."""
    policy = shorten_step_retries(monkeypatch, 5)
    assert shortest_retry_span(policy) > OUTAGE_SECONDS  # still faithful: success is not luck
    add_s3(env, fault_proxy.url, s3_bucket, frequency="weekly")
    fault_proxy.outage("UploadPart", nth=2, seconds=OUTAGE_SECONDS)
    shipped_store = ObjectStoreResource(min_part_size_mb=5, default_part_size_mb=5)  # shipped retry settings
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="exports_pipeline"):
        result = materialize(env, f"{DAY1}|proj-1", "weekly", object_store=shipped_store)

    assert result.success, failure_text(result) if events(result, "STEP_FAILURE") else "failed"
    ((went, came),) = fault_proxy.outages
    assert came - went >= OUTAGE_SECONDS - 0.5
    assert "EndpointConnectionError" in caplog.text  # connections really were refused meanwhile
    assert len(events(result, "STEP_UP_FOR_RETRY")) >= 1 and time.monotonic() - started >= OUTAGE_SECONDS
    stored = env["state"].get_blob_integration("proj-1")
    assert stored.enabled and stored.last_error is None
    manifest_key = "proj-1/events/weekly/2026-11-02T00-00-00Z_2026-11-09T00-00-00Z/manifest.json"
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    (entry,) = manifest["files"]
    head = s3_client.head_object(Bucket=s3_bucket, Key=entry["key"], PartNumber=1)
    assert head.get("PartsCount", 1) >= 2, "the file went up in several parts"
    data = s3_client.get_object(Bucket=s3_bucket, Key=entry["key"])["Body"].read()
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    assert read_file(data, "jsonl", "none") == clickhouse_rows(seeded, "proj-1", start, start + dt.timedelta(days=7))


def test_connection_refused_is_retried_and_never_disables(env, quick_step_retries):
    """Nothing listens on the port for the whole run: every attempt fails, and the step is retried; the
    integration stays enabled (the late-rows sensor requests the window again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
        add_s3(env, f"http://127.0.0.1:{sock.getsockname()[1]}")
        result = materialize(env, f"{DAY1}|proj-1")
    assert not result.success
    assert len(events(result, "STEP_UP_FOR_RETRY")) == blob_storage.RETRY_POLICY.max_retries
    stored = env["state"].get_blob_integration("proj-1")
    assert stored.enabled and stored.last_error.startswith("TransientFault: ")  # told, not blamed
    assert fault_of(env, result) == "transient"  # what the late-rows sensor requests again
    assert "EndpointConnectionError" in stored.last_error


# ---------------------------------------------------------------------------------------- customer faults


def test_host_name_that_does_not_resolve_disables_at_once(env, quick_step_retries):
    add_s3(env, "http://s3.exports-pipeline-test.invalid:9000")  # RFC 6761: never resolves
    result = materialize(env, f"{DAY1}|proj-1")
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    stored = env["state"].get_blob_integration("proj-1")
    assert stored.enabled is False and "does not resolve" in stored.last_error
    assert fault_of(env, result) == "customer"


@pytest.mark.parametrize("status, code", [(404, "NoSuchBucket"), (403, "InvalidAccessKeyId"),
                                          (403, "SignatureDoesNotMatch")])
def test_what_the_server_states_still_disables_at_once(env, fault_proxy, quick_step_retries, status, code):
    fault_proxy.fail_all(status=status, code=code, message="stated by the server")
    add_s3(env, fault_proxy.url)
    result = materialize(env, f"{DAY1}|proj-1")
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    stored = env["state"].get_blob_integration("proj-1")
    assert stored.enabled is False and code in stored.last_error


# -------------------------------------------------------------------------------------- deployment faults


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    """Settings read from a clean environment of this test (no key file under its EXPORTS_HOME)."""
    monkeypatch.setenv("EXPORTS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def assert_deployment_fault(env, result, setting: str, *secrets: str) -> str:
    """One attempt, failed naming `setting`; the integration enabled and its last_error clean."""
    assert not result.success
    assert len(events(result, "STEP_START")) == 1 and events(result, "STEP_UP_FOR_RETRY") == []
    text = failure_text(result)
    assert setting in text and "stays enabled" in text
    assert not any(secret in text for secret in secrets)
    stored = env["state"].get_blob_integration("proj-1")
    assert stored.enabled and stored.last_error is None
    cursor = env["state"].get_cursor(blob_cursor_sink("daily"), "proj-1")
    assert setting in cursor.last_error
    assert fault_of(env, result) == "deployment"
    return text


@pytest.mark.parametrize("key_now", ["another key", "no key"])
def test_an_encryption_key_that_cannot_decrypt_fails_once_naming_it(env, fault_proxy, settings_env,
                                                                     quick_step_retries, key_now):
    stored_under, other = generate_key(), generate_key()
    if key_now == "another key":
        settings_env.setenv("ENCRYPTION_KEY", other)
    else:
        settings_env.delenv("ENCRYPTION_KEY", raising=False)
    get_settings.cache_clear()
    add_s3(env, fault_proxy.url, access_key_id="AKIAEXAMPLE",
           secret_access_key=SecretBox(stored_under).encrypt(SECRET))
    result = materialize(env, f"{DAY1}|proj-1")
    assert_deployment_fault(env, result, "ENCRYPTION_KEY", SECRET, stored_under, other)
    assert sum(fault_proxy.counts.values()) == 0  # the destination was never contacted


def test_an_events_table_without_start_time_fails_once_naming_it(env, seeded, chdb_path, ch_database,
                                                                 quick_step_retries):
    with chdb_client(chdb_path) as client:  # what the first query reads, but for start_time
        client.command(f"CREATE TABLE {ch_database}.events_full (project_id String, event_ts DateTime64(6, 'UTC'), "
                       "is_deleted UInt8, input_length UInt64, output_length UInt64) "
                       "ENGINE = MergeTree ORDER BY project_id")
    add_local(env, file_types=("csv",))
    broken = ClickHouseResource(url=seeded.url, events_table=f"{ch_database}.events_full")
    result = materialize(env, f"{DAY1}|proj-1", clickhouse=broken)
    text = assert_deployment_fault(env, result, "EXPORTS_EVENTS_TABLE")
    # the run reads the table's columns first (schema drift) and names what is missing before any query
    assert "no column start_time" in text and f"{ch_database}.events_full" in text
    assert list(env["out"].iterdir()) == []
