"""Windows exported to moto's S3 server over HTTP: read back, multipart, retried 5xx, aborted failures."""

from __future__ import annotations

import datetime as dt

import pytest

from exports_pipeline.errors import CustomerFault, TransientFault
from exports_pipeline.sinks.object_storage.export import export_window
from exports_pipeline.windows import Window
from exports_pipeline.resources.clickhouse import ClickHouseError, ClickHouseResource
from exports_pipeline_tests.seeded_events import DAY_END, DAY_START
from exports_pipeline_tests.export.readback import clickhouse_rows, read_file
from exports_pipeline_tests.export.test_blob_export import integration, request
from exports_pipeline_tests.s3_peers import pending_uploads

TWO_DAYS = Window(DAY_START, DAY_END + dt.timedelta(days=1))


def s3_integration(bucket: str, **kw):
    return integration(type="S3", bucket_name=bucket, **kw)


def test_all_formats_to_s3_read_back_equal_to_clickhouse(seeded, s3_bucket, make_store, s3_client):
    store = make_store(s3_bucket, prefix="exports/")
    integ = s3_integration(s3_bucket, prefix="exports/", file_types=("csv", "json", "jsonl", "parquet"),
                           compression="gzip")
    result = export_window(seeded, store, integ, request())
    reference = clickhouse_rows(seeded, "proj-1", DAY_START, DAY_END)
    assert {f.format for f in result.files} == {"csv", "json", "jsonl", "parquet"}
    for f in result.files:
        assert f.obj.key.startswith("exports/proj-1/events/daily/")
        body = s3_client.get_object(Bucket=s3_bucket, Key=f.obj.key)
        assert body["ContentType"] == f.obj.content_type
        assert read_file(body["Body"].read(), f.format, f.compression) == reference
    manifest_key = "exports/proj-1/events/daily/2026-11-02T00-00-00Z_2026-11-03T00-00-00Z/manifest.json"
    assert result.manifest_uri == f"s3://{s3_bucket}/{manifest_key}"
    assert s3_client.head_object(Bucket=s3_bucket, Key=manifest_key)["ContentLength"] > 0


def test_multipart_with_small_parts_and_an_injected_5xx_on_a_part(seeded, s3_bucket, make_store, s3_client,
                                                                   fault_proxy):
    fault_proxy.fail("UploadPart", nth=2, times=1, status=500)
    store = make_store(s3_bucket, endpoint=fault_proxy.url)
    result = export_window(seeded, store, s3_integration(s3_bucket, file_types=("jsonl",)),
                           request(window=TWO_DAYS))
    (f,) = result.files
    head = s3_client.head_object(Bucket=s3_bucket, Key=f.obj.key, PartNumber=1)
    assert head.get("PartsCount", 1) >= 2, "the object was uploaded in several parts"
    assert fault_proxy.count("UploadPart") >= head["PartsCount"] + 1, "the failed part was sent again"
    data = s3_client.get_object(Bucket=s3_bucket, Key=f.obj.key)["Body"].read()
    assert read_file(data, "jsonl", "none") == clickhouse_rows(seeded, "proj-1", TWO_DAYS.start, TWO_DAYS.end)
    assert pending_uploads(s3_client, s3_bucket) == []


def test_access_denied_is_a_customer_fault_and_nothing_is_written(seeded, s3_bucket, make_store, s3_client,
                                                                   fault_proxy):
    fault_proxy.fail_all(status=403, code="AccessDenied")
    store = make_store(s3_bucket, endpoint=fault_proxy.url)
    with pytest.raises(CustomerFault) as err:
        export_window(seeded, store, s3_integration(s3_bucket), request())
    assert err.value.code == "AccessDenied"
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


def test_upload_failing_mid_stream_leaves_no_object_and_no_pending_upload(seeded, s3_bucket, make_store, s3_client,
                                                                        fault_proxy):
    fault_proxy.fail("UploadPart", nth=2, times=float("inf"), status=503, code="SlowDown")
    store = make_store(s3_bucket, endpoint=fault_proxy.url, max_attempts=2)
    with pytest.raises(TransientFault):
        export_window(seeded, store, s3_integration(s3_bucket, file_types=("jsonl",)), request(window=TWO_DAYS))
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert pending_uploads(s3_client, s3_bucket) == []


class _BreaksMidStream(ClickHouseResource):
    """The real resource, whose second sub-range dies half-written (a dropped ClickHouse connection)."""

    def export_to_file(self, sql, fmt, path, parameters=None, **kwargs):
        if parameters and parameters["start"] > DAY_START:
            with open(path, "wb") as fh:
                fh.write(b"0,partial row that never ends")
            raise ClickHouseError("connection reset by peer (injected)")
        return super().export_to_file(sql, fmt, path, parameters, **kwargs)


def test_clickhouse_failing_mid_stream_leaves_no_object(seeded, s3_bucket, make_store, s3_client):
    broken = _BreaksMidStream(url=seeded.url, events_table=seeded.events_table)
    store = make_store(s3_bucket)
    with pytest.raises(ClickHouseError, match="injected"):
        export_window(broken, store, s3_integration(s3_bucket, file_types=("csv",)), request(window=TWO_DAYS),
                      subrange_bytes=1 << 20)
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert pending_uploads(s3_client, s3_bucket) == []
