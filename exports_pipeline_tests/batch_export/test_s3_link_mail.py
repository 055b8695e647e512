"""Batch exports to S3 (moto behind the fault proxy): small multipart parts with an injected 5xx, the link
fetched over HTTP with its attachment header and the external endpoint's host, the mail as a real SMTP
server receives it (and its link downloads the file), a mail that cannot be sent, cancel while running
(nothing left), and a failure message per fault class that names what to do and never a secret."""

from __future__ import annotations

import threading
import time
import urllib.request
from urllib.parse import urlsplit

import pytest

from exports_pipeline.batch_export.request import stored_query
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.state.models import BATCH_EXPORT_ENTITY
from exports_pipeline_tests.batch_export.bx import local_env, read_export, reference_rows, s3_settings
from exports_pipeline_tests.s3_peers import object_missing, pending_uploads

SECRET = "bx-s3cret/Key+with=signs"


@pytest.fixture
def s3_env(seeded, tmp_path, s3_bucket, fault_proxy):
    """Writes go through the fault proxy; links are signed for moto's own address (the 'external' host)."""
    settings = s3_settings(s3_bucket, fault_proxy.url)
    with local_env(seeded, tmp_path, **settings) as env:
        env.bucket, env.proxy = s3_bucket, fault_proxy
        yield env


def fetch(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def test_multipart_with_a_5xx_reads_back_and_the_link_downloads_it(s3_env, s3_client, moto_endpoint):
    env = s3_env.with_settings(external_endpoint=moto_endpoint)
    env.proxy.fail("UploadPart", nth=1, status=500, code="InternalError")
    outcome = env.run(env.submit(format="json", name='gens "all"'))
    export = outcome.export
    assert export.status == "COMPLETED", export.log
    assert env.proxy.count("UploadPart") >= 3, "two parts of 5 MiB or more, the first retried"
    assert pending_uploads(s3_client, env.bucket) == []
    body = s3_client.get_object(Bucket=env.bucket, Key=export.object_key)["Body"].read()
    assert read_export(body, "json", "none", list(stored_query(export).columns)) == \
        reference_rows(env.clickhouse, stored_query(export))
    assert export.object_uri == f"s3://{env.bucket}/{export.object_key}" and export.bytes == len(body)
    assert export.object_key.startswith(f"exports/proj-1/{export.id}/")
    assert env.state.list_event_log("proj-1", BATCH_EXPORT_ENTITY, export.id)[0].bucket_path == export.object_key

    link = export.url
    assert urlsplit(link).netloc == urlsplit(moto_endpoint).netloc, "signed for the external endpoint"
    assert "X-Amz-Expires=86400" in link and "testing" not in urlsplit(link).query.split("Credential=")[0]
    status, headers, got = fetch(link)
    assert status == 200 and got == body
    name = export.object_key.rsplit("/", 1)[1]
    assert headers["Content-Disposition"].startswith(f'attachment; filename="{name}"') and "gens-all" in name
    assert outcome.metadata()["link"] == link


def test_mail_with_a_link_that_downloads_the_file(s3_env, smtp_server, moto_endpoint):
    env = s3_env.with_settings(external_endpoint=moto_endpoint)
    export_id = env.submit(format="csv", limit=20, email="alice@example.com")
    result = env.run_job(export_id, mailer=smtp_server.mailer())
    assert result.success
    export = env.state.get_batch_export(export_id)
    (got,) = smtp_server.received
    assert got.rcpt_tos == ["alice@example.com"] and got.message["Subject"] == "Your data export is ready"
    text = got.message.get_body(("plain",)).get_content()
    link = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Download: "))
    assert link == export.url and "matching rows" in text  # 20 of the matching rows: the cut in words
    status, _, body = fetch(link)
    assert status == 200
    assert len(read_export(body, "csv", "none", list(stored_query(export).columns))) == 20


def test_a_mail_that_cannot_be_sent_is_a_warning_not_a_failure(s3_env, smtp_down_url):
    from exports_pipeline.resources.mailer import MailerResource

    export_id = s3_env.submit(format="csv", limit=5, email="bob@example.com")
    result = s3_env.run_job(export_id, mailer=MailerResource(smtp_url=smtp_down_url, email_from="x@example.com"))
    assert result.success
    export = s3_env.state.get_batch_export(export_id)
    assert export.status == "COMPLETED" and "could not be sent" in export.message
    warnings = [e for e in result.all_events if e.event_type_value == "ENGINE_EVENT" or e.is_failure]
    assert not [e for e in warnings if e.is_failure]


def test_cancel_while_running_stops_within_seconds_and_leaves_nothing(s3_env, s3_client):
    env = s3_env
    env.proxy.slow("CreateMultipartUpload", seconds=2.0)
    export_id = env.submit(format="json")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(env.run(export_id, cancel_poll_seconds=0.1)))
    worker.start()
    deadline = time.monotonic() + 60
    while env.proxy.count("CreateMultipartUpload") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = env.state.list_event_log("proj-1", BATCH_EXPORT_ENTITY, export_id)
    assert len(logged) == 1, "the object is in event_log before it exists"
    assert object_missing(s3_client, env.bucket, logged[0].bucket_path), "and nothing is under its key yet"
    asked = time.monotonic()
    assert env.state.request_batch_export_cancel(export_id) is not None
    worker.join(timeout=30)
    stopped = time.monotonic() - asked
    export = outcome[0].export
    assert export.status == "CANCELLED" and "no file was kept" in export.message
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    key = f"exports/proj-1/{export_id}/"
    assert s3_client.list_objects_v2(Bucket=env.bucket, Prefix=key).get("KeyCount", 0) == 0
    assert pending_uploads(s3_client, env.bucket) == []
    assert env.state.list_event_log("proj-1", BATCH_EXPORT_ENTITY, export_id) == []


# ------------------------------------------------------------------------------------ failure messages


def _failed(env, export_id: str, **kw) -> str:
    result = env.run_job(export_id, **kw)
    assert not result.success
    export = env.state.get_batch_export(export_id)
    assert export.status == "FAILED" and export.log
    assert export.log in result.failure_data_for_node("export_request").error.message
    assert SECRET not in export.log and "internal error occurred" not in export.log.lower()
    return export.log


def test_missing_bucket_says_so_and_names_the_setting(seeded, tmp_path, moto_endpoint):
    settings = s3_settings("no-such-bucket-bx", moto_endpoint)
    with local_env(seeded, tmp_path, **settings) as env:
        log = _failed(env, env.submit(limit=5))
    assert "does not exist" in log and "EXPORTS_BATCH_EXPORT_DESTINATION" in log and "No file was kept" in log


def test_access_denied_says_what_the_operator_must_allow_and_never_the_secret(seeded, tmp_path, s3_bucket,
                                                                               fault_proxy):
    from pydantic import SecretStr

    settings = {**s3_settings(s3_bucket, fault_proxy.url), "secret_access_key": SecretStr(SECRET)}
    fault_proxy.fail_all(403, "AccessDenied", f"Access Denied for {SECRET}")
    with local_env(seeded, tmp_path, **settings) as env:
        log = _failed(env, env.submit(limit=5))
    assert "refused to store the file" in log and "EXPORTS_BATCH_EXPORT_ACCESS_KEY_ID" in log and "***" in log


def test_filter_column_missing_from_the_table(seeded, ch_database, tmp_path):
    # An events table of a Langfuse version without `release` (chDB hangs on ALTER ... DROP COLUMN, so the
    # older table is made from the seeded one minus that column).
    table = f"{ch_database}.events_full"
    clickhouse = ClickHouseResource(url=seeded.url, events_table=table)
    clickhouse.command(f"CREATE TABLE {table} ENGINE = ReplacingMergeTree(event_ts, is_deleted) "
                       "ORDER BY (project_id, start_time, span_id) "
                       f"AS SELECT * EXCEPT (`release`) FROM {seeded.events_table} WHERE project_id = 'proj-1'")
    with local_env(clickhouse, tmp_path) as env:
        log = _failed(env, env.submit(filter='[{"column":"release","type":"null","operator":"is null","value":""}]'))
    assert f"the events table {table} has no column 'release'" in log and "remove the condition" in log


def test_clickhouse_memory_limit_says_how_to_ask_for_less(seeded, tmp_path):
    from exports_pipeline.batch_export.faults import diagnose

    with local_env(seeded, tmp_path) as env:
        export_id = env.submit(order_by="input:desc")
        with pytest.raises(Exception) as caught:
            env.run(export_id, engine_settings={"max_memory_usage": 4_000_000})
        message = diagnose(caught.value, destination="file:///x/", table=seeded.events_table).message
        assert env.state.list_event_log("proj-1", BATCH_EXPORT_ENTITY, export_id) == []
    assert "ran out of memory" in message and "Narrow the filter" in message and "lower --limit" in message
