"""S3ObjectStore against moto's server over HTTP with real boto3; every object is read back."""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
import urllib.request
import uuid

import pytest
import zstandard

from exports_pipeline.errors import CustomerFault, ObjectNotFound
from exports_pipeline.resources.object_store import Destination, S3ObjectStore
from exports_pipeline.resources.object_store.sizing import MiB
from exports_pipeline_tests.s3_peers import (
    object_missing,
    pending_uploads,
    seed_objects,
    unique_key,
)


def odd_chunks(total: int, seed: int = 7) -> list[bytes]:
    """``total`` pseudo-random bytes cut into irregular pieces (1 byte to 700 KiB)."""
    rng = random.Random(seed)
    chunks, left = [], total
    while left:
        size = min(left, rng.choice([1, 13, 4095, 65_537, 300_001, 700 * 1024]))
        chunks.append(rng.randbytes(size))
        left -= size
    return chunks


def test_small_object_is_one_put_with_correct_content_sha_and_size(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket)
    key = unique_key("small.jsonl")
    data = b'{"a": 1}\n' * 1000
    with store.writer(key, "application/x-ndjson", expected_size=len(data)) as writer:
        writer.write(data[:100])
        writer.write(memoryview(data)[100:])
        assert object_missing(s3_client, s3_bucket, key), "nothing may be visible before commit"
        written = writer.commit()
    assert writer.parts == 0  # never went multipart
    assert written.key == key and written.uri == f"s3://{s3_bucket}/{key}"
    assert written.size == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.content_type == "application/x-ndjson"
    stored = s3_client.get_object(Bucket=s3_bucket, Key=key)
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "application/x-ndjson"
    assert written.etag == stored["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert store.get_bytes(key) == data


def test_empty_object(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket)
    key = unique_key("empty.csv")
    with store.writer(key, "text/csv", expected_size=0) as writer:
        written = writer.commit()
    assert written.size == 0 and written.sha256 == hashlib.sha256(b"").hexdigest()
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b""


def test_multipart_stream_of_odd_writes_round_trips_byte_for_byte(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket, min_part_size=5 * MiB, max_concurrency=3)
    key = unique_key("big.parquet")
    chunks = odd_chunks(23 * MiB + 12_345)
    data = b"".join(chunks)
    with store.writer(key, "application/vnd.apache.parquet", expected_size=len(data)) as writer:
        assert writer.part_size == 5 * MiB
        for chunk in chunks:
            writer.write(chunk)
        assert object_missing(s3_client, s3_bucket, key)
        assert len(pending_uploads(s3_client, s3_bucket)) == 1
        written = writer.commit()
    assert writer.parts == 5  # 4 full parts of 5 MiB and the 3 MiB remainder
    assert written.size == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    stored = s3_client.get_object(Bucket=s3_bucket, Key=key)
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "application/vnd.apache.parquet"
    assert stored["ETag"].strip('"').endswith("-5")
    assert s3_client.head_object(Bucket=s3_bucket, Key=key, PartNumber=1)["PartsCount"] == 5
    assert written.etag == stored["ETag"].strip('"')
    assert pending_uploads(s3_client, s3_bucket) == []


def test_exactly_one_part_of_data_is_still_a_single_put(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket, min_part_size=5 * MiB)
    key = unique_key()
    data = random.Random(1).randbytes(5 * MiB)
    with store.writer(key, expected_size=1) as writer:
        writer.write(data)
        written = writer.commit()
    assert writer.parts == 0 and "-" not in written.etag
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data


def test_exception_inside_with_aborts_and_leaves_nothing(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket, min_part_size=5 * MiB)
    key = unique_key()
    with pytest.raises(RuntimeError, match="ClickHouse died"):
        with store.writer(key, expected_size=100 * MiB) as writer:
            writer.write(b"x" * (12 * MiB))  # two parts uploaded already
            assert len(pending_uploads(s3_client, s3_bucket)) == 1
            raise RuntimeError("ClickHouse died mid-stream")
    assert writer.closed and writer.parts == 2
    assert pending_uploads(s3_client, s3_bucket) == []
    assert object_missing(s3_client, s3_bucket, key)


def test_leaving_with_block_without_commit_aborts_loudly(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket)
    key = unique_key()
    with pytest.raises(RuntimeError, match="without commit"):
        with store.writer(key) as writer:
            writer.write(b"data")
    assert object_missing(s3_client, s3_bucket, key)


def test_sse_and_content_type_are_applied(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket, destination={"sse": "AES256"}, min_part_size=5 * MiB)
    small, big = unique_key("small"), unique_key("big")
    store.put_bytes(small, b"manifest", "application/json")
    with store.writer(big, "text/csv", expected_size=6 * MiB) as writer:
        writer.write(b"y" * (6 * MiB))
        writer.commit()
    for key, content_type in ((small, "application/json"), (big, "text/csv")):
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentType"] == content_type
    assert store.get_bytes(big) == b"y" * (6 * MiB)


def test_writer_is_a_sink_for_gzip_and_zstd(make_store, s3_bucket):
    store = make_store(s3_bucket)
    text = b"".join(b'{"row": %d}\n' % i for i in range(50_000))
    gz_key, zst_key = unique_key("a.jsonl.gz"), unique_key("a.jsonl.zst")
    with store.writer(gz_key, "application/gzip") as writer:
        with gzip.GzipFile(fileobj=writer, mode="wb") as gz:
            gz.write(text)
        gz_written = writer.commit()
    with store.writer(zst_key, "application/zstd") as writer:
        with zstandard.ZstdCompressor().stream_writer(writer, closefd=False) as zst:
            zst.write(text)
        writer.commit()
    gz_bytes = store.get_bytes(gz_key)
    assert gzip.decompress(gz_bytes) == text
    assert gz_written.sha256 == hashlib.sha256(gz_bytes).hexdigest()  # of the bytes as stored
    assert zstandard.ZstdDecompressor().decompressobj().decompress(store.get_bytes(zst_key)) == text


def test_put_get_exists_open_read(make_store, s3_bucket):
    store = make_store(s3_bucket, prefix="p/")
    key = store.destination.key_for("manifests/m.json")
    assert key == "p/manifests/m.json"
    assert not store.exists(key)
    written = store.put_bytes(key, b'{"ok": true}\n', "application/json")
    assert written.sha256 == hashlib.sha256(b'{"ok": true}\n').hexdigest()
    assert store.exists(key)
    assert store.get_bytes(key) == b'{"ok": true}\n'
    data = random.Random(3).randbytes(3 * MiB + 5)
    store.put_bytes(key, data)  # overwrite
    with store.open_read(key) as stream:
        head = stream.read(10)
        rest = stream.read()
    assert head + rest == data
    with pytest.raises(ObjectNotFound):
        store.get_bytes("p/missing")
    with pytest.raises(ObjectNotFound):
        store.open_read("p/missing")


def test_list_keys_paginates_and_delete_keys_batches(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket)
    keys = [f"many/{i:05d}.csv" for i in range(1500)]
    seed_objects(s3_bucket, {key: key.encode() for key in keys})
    s3_client.put_object(Bucket=s3_bucket, Key="other/keep.csv", Body=b"keep")
    assert s3_client.get_object(Bucket=s3_bucket, Key="many/01234.csv")["Body"].read() == b"many/01234.csv"
    assert store.list_keys("many/") == keys  # > 1000: needed a second page
    assert len(store.list_keys("")) == 1501
    assert store.list_keys("many/0149") == [f"many/0149{i}.csv" for i in range(10)]
    store.delete_keys(keys + ["many/never-existed.csv"])  # two DeleteObjects batches; missing is fine
    assert store.list_keys("many/") == []
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="many/")["KeyCount"] == 0
    assert store.get_bytes("other/keep.csv") == b"keep"
    store.delete_keys([])


def test_presigned_url_downloads_with_plain_urllib(make_store, s3_bucket):
    store = make_store(s3_bucket)
    key = unique_key("export 2026-07-01.csv")
    store.put_bytes(key, b"a,b\n1,2\n", "text/csv")
    url = store.presign_get(key, 600, filename="Langfuse export ü.csv")
    with urllib.request.urlopen(url) as response:
        body = response.read()
        disposition = response.headers["Content-Disposition"]
    assert body == b"a,b\n1,2\n"
    assert disposition.startswith("attachment;")
    assert 'filename="Langfuse export _.csv"' in disposition
    assert "filename*=UTF-8''Langfuse%20export%20%C3%BC.csv" in disposition
    default_name = urllib.request.urlopen(store.presign_get(key, 60)).headers["Content-Disposition"]
    assert 'filename="export 2026-07-01.csv"' in default_name


def test_validate_passes_on_a_good_bucket_and_leaves_nothing(make_store, s3_bucket, s3_client):
    store = make_store(s3_bucket, prefix="team/")
    result = store.validate()
    assert result.ok and result.uri == f"s3://{s3_bucket}/team/"
    assert "exports-pipeline-validation-" in result.detail
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_missing_bucket_is_the_customers_fault(make_store, moto_endpoint):
    store = make_store(f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(CustomerFault) as validate_error:
        store.validate()
    assert validate_error.value.code == "NoSuchBucket"
    assert "NoSuchBucket" in str(validate_error.value)
    with pytest.raises(CustomerFault, match="NoSuchBucket"):
        with store.writer("k", expected_size=10 * MiB) as writer:
            writer.write(b"z" * (6 * MiB))  # forces CreateMultipartUpload
    with pytest.raises(CustomerFault, match="NoSuchBucket"):
        store.list_keys("")


def test_store_uses_default_credential_chain_without_keys(moto_endpoint, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    store = S3ObjectStore(Destination.from_url(f"s3://{s3_bucket}/", endpoint_url=moto_endpoint))
    try:
        assert store.client._request_signer._credentials.access_key == "from-env"
        store.put_bytes("chain.txt", b"ok")
        assert store.get_bytes("chain.txt") == b"ok"
    finally:
        store.close()


def test_over_http_bodies_are_protected_by_the_signed_payload_hash_not_a_second_md5(
        make_store, s3_bucket, s3_client, fault_proxy):
    """Plain http: SigV4 signs each body's SHA-256 (the server checks it), so no Content-MD5 pass is spent."""
    store = make_store(s3_bucket, endpoint=fault_proxy.url)  # 5 MiB parts
    assert not store.sends_content_md5
    key = unique_key("signed.bin")
    data = random.Random(3).randbytes(11 * MiB)  # three parts
    with store.writer(key, "application/octet-stream", expected_size=len(data)) as writer:
        writer.write(data)
        written = writer.commit()
    small = unique_key("signed-small.bin")
    store.put_bytes(small, b"tiny", "application/octet-stream")
    sent = [(op, h, digest) for op, h, digest in fault_proxy.seen if op in ("UploadPart", "PutObject")]
    assert [op for op, _, _ in sent].count("UploadPart") == 3 and [op for op, _, _ in sent].count("PutObject") == 1
    for _op, headers, body_sha in sent:
        assert "content-md5" not in headers
        assert headers["x-amz-content-sha256"] == body_sha  # the body itself is signed
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data
    # the multipart ETag the store expects (for recognising a lost completion) is the server's
    assert written.etag == s3_client.head_object(Bucket=s3_bucket, Key=key)["ETag"].strip('"')


def test_over_https_bodies_carry_content_md5_and_no_payload_signature(make_store):
    """https (and AWS without an endpoint): TLS plus Content-MD5 protect the body, and botocore then skips
    the payload hash. Checked on the request as it leaves (nothing listens on the port)."""
    aws = S3ObjectStore(Destination.from_url("s3://bucket/", access_key_id="AKIAEXAMPLE", secret_access_key="x"))
    assert aws.sends_content_md5  # no endpoint: AWS over https
    aws.close()
    store = make_store("bucket", endpoint="https://127.0.0.1:9", max_attempts=1)
    assert store.sends_content_md5
    seen = []
    store.client.meta.events.register("before-send.s3.PutObject",
                                      lambda request, **_: seen.append(dict(request.headers)))
    with pytest.raises(Exception):  # noqa: B017,PT011 - the connection is refused; the request is what counts
        store.put_bytes("k.bin", b"payload", "application/octet-stream")
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in seen[0].items()}
    assert headers["content-md5"] == base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
