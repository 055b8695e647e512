"""Failures on the wire, injected by a reverse proxy in front of moto: retries, faults, clean aborts."""

from __future__ import annotations

import hashlib
import random
import socket

import pytest

from exports_pipeline.errors import CustomerFault, ObjectTooLarge, TransientFault
from exports_pipeline.resources.object_store import sizing
from exports_pipeline.resources.object_store.sizing import MiB
from exports_pipeline_tests.s3_peers import object_missing, pending_uploads, unique_key

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def stream(writer, data: bytes, piece: int = 1 * MiB + 17) -> None:
    for start in range(0, len(data), piece):
        writer.write(data[start:start + piece])


def payload(size: int, seed: int = 11) -> bytes:
    return random.Random(seed).randbytes(size)


def test_a_500_on_one_upload_part_is_retried_and_the_object_is_whole(
        make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.fail("UploadPart", nth=2, status=500, code="InternalError")
    fault_proxy.fail("UploadPart", nth=3, status=503, code="SlowDown",
                     message="Please reduce your request rate.")
    store = make_store(s3_bucket, endpoint=fault_proxy.url, max_concurrency=1)
    key = unique_key()
    data = payload(16 * MiB)
    with store.writer(key, "text/csv", expected_size=len(data)) as writer:
        stream(writer, data)
        written = writer.commit()
    assert fault_proxy.count("UploadPart") == 4 + 2  # 4 parts, two of them sent twice
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data
    assert pending_uploads(s3_client, s3_bucket) == []


def test_retries_are_ours_not_botocores(make_store, s3_bucket, s3_client, fault_proxy):
    """With max_attempts=1 a single 500 fails the upload: botocore itself must not retry."""
    fault_proxy.fail("UploadPart", nth=1, status=500, code="InternalError")
    store = make_store(s3_bucket, endpoint=fault_proxy.url, max_attempts=1, max_concurrency=1)
    key = unique_key()
    with pytest.raises(TransientFault) as error:
        with store.writer(key, expected_size=12 * MiB) as writer:
            stream(writer, payload(12 * MiB))
            writer.commit()
    assert error.value.code == "InternalError"
    assert "UploadPart" in str(error.value) and key in str(error.value)
    assert fault_proxy.count("UploadPart") == 1  # part 1 once; part 2 waited for its slot, then stopped
    assert fault_proxy.count("AbortMultipartUpload") == 1
    assert pending_uploads(s3_client, s3_bucket) == []
    assert object_missing(s3_client, s3_bucket, key)


def test_retries_give_up_after_max_attempts_and_abort(make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.fail("UploadPart", nth=1, times=float("inf"), status=503, code="SlowDown")
    store = make_store(s3_bucket, endpoint=fault_proxy.url, max_attempts=3, max_concurrency=1)
    key = unique_key()
    with pytest.raises(TransientFault, match=r"SlowDown.*gave up after 3 attempts"):
        with store.writer(key, expected_size=20 * MiB) as writer:
            stream(writer, payload(20 * MiB))
            writer.commit()
    assert fault_proxy.count("UploadPart") == 3  # the first part, three times; later parts never started
    assert pending_uploads(s3_client, s3_bucket) == []
    assert object_missing(s3_client, s3_bucket, key)


def test_access_denied_is_a_customer_fault_and_never_retried(make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.fail_all(status=403, code="AccessDenied", message="Access Denied")
    store = make_store(s3_bucket, endpoint=fault_proxy.url, secret=SECRET)
    key = unique_key()
    with pytest.raises(CustomerFault) as error:
        store.put_bytes(key, b"manifest")
    assert error.value.code == "AccessDenied"
    assert "AccessDenied" in str(error.value) and SECRET not in str(error.value)
    assert fault_proxy.count("PutObject") == 1
    with pytest.raises(CustomerFault, match="AccessDenied"):
        with store.writer(unique_key(), expected_size=8 * MiB) as writer:
            stream(writer, payload(6 * MiB))
    assert fault_proxy.count("CreateMultipartUpload") == 1
    with pytest.raises(CustomerFault, match="AccessDenied"):
        store.validate()
    assert fault_proxy.count("PutObject") == 2
    assert object_missing(s3_client, s3_bucket, key)


def test_signature_mismatch_mid_upload_stops_everything(make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.fail("UploadPart", nth=2, status=403, code="SignatureDoesNotMatch",
                     message="The request signature we calculated does not match the signature you provided.")
    store = make_store(s3_bucket, endpoint=fault_proxy.url, max_concurrency=1, secret=SECRET)
    key = unique_key()
    with pytest.raises(CustomerFault) as error:
        with store.writer(key, expected_size=30 * MiB) as writer:
            stream(writer, payload(30 * MiB))
            writer.commit()
    assert error.value.code == "SignatureDoesNotMatch" and SECRET not in str(error.value)
    assert fault_proxy.count("UploadPart") == 2  # the failing part was not retried, nothing after it ran
    assert pending_uploads(s3_client, s3_bucket) == []
    assert object_missing(s3_client, s3_bucket, key)


def test_connection_closed_mid_request_is_retried(make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.drop("UploadPart", nth=1)
    fault_proxy.drop("PutObject", nth=1)
    store = make_store(s3_bucket, endpoint=fault_proxy.url)
    big, small = unique_key("big"), unique_key("small")
    data = payload(11 * MiB)
    with store.writer(big, expected_size=len(data)) as writer:
        stream(writer, data)
        writer.commit()
    store.put_bytes(small, b"tiny")
    assert fault_proxy.count("UploadPart") == 3 + 1
    assert fault_proxy.count("PutObject") == 2
    assert s3_client.get_object(Bucket=s3_bucket, Key=big)["Body"].read() == data
    assert s3_client.get_object(Bucket=s3_bucket, Key=small)["Body"].read() == b"tiny"


def test_read_timeout_is_retried(make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.hang("PutObject", seconds=1.5, nth=1)
    store = make_store(s3_bucket, endpoint=fault_proxy.url, read_timeout=0.5)
    key = unique_key()
    store.put_bytes(key, b"late but whole")
    assert fault_proxy.count("PutObject") == 2
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"late but whole"


def test_lost_complete_response_is_recognised_as_success(make_store, s3_bucket, s3_client, fault_proxy):
    """CompleteMultipartUpload succeeded upstream but its answer never arrived: the retry sees
    NoSuchUpload, and the object's multipart ETag proves it is ours."""
    fault_proxy.drop("CompleteMultipartUpload", nth=1, after_forward=True)
    store = make_store(s3_bucket, endpoint=fault_proxy.url)
    key = unique_key()
    data = payload(12 * MiB)
    with store.writer(key, expected_size=len(data)) as writer:
        stream(writer, data)
        written = writer.commit()
    assert fault_proxy.count("CompleteMultipartUpload") == 2
    assert written.etag.endswith("-3")
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data


def test_part_overflow_aborts_instead_of_truncating(
        make_store, s3_bucket, s3_client, fault_proxy, monkeypatch):
    """Langfuse #17282 in miniature: 3 parts allowed, a tiny expected size, 16 MiB of data."""
    monkeypatch.setattr(sizing, "S3_MAX_PARTS", 3)
    store = make_store(s3_bucket, endpoint=fault_proxy.url, min_part_size=5 * MiB)
    key = unique_key("huge.jsonl")
    with pytest.raises(ObjectTooLarge) as error:
        with store.writer(key, expected_size=1024) as writer:
            assert writer.capacity == 15 * MiB
            for _ in range(16):
                writer.write(b"r" * MiB)
            writer.commit()
    message = str(error.value)
    assert key in message and "3 parts" in message
    assert "5.0 MiB (5,242,880 bytes)" in message  # the part size
    assert "15.0 MiB (15,728,640 bytes) were written" in message  # the bytes written
    assert writer.bytes_written == 15 * MiB
    assert fault_proxy.count("CompleteMultipartUpload") == 0
    assert fault_proxy.count("AbortMultipartUpload") == 1
    assert pending_uploads(s3_client, s3_bucket) == []
    assert object_missing(s3_client, s3_bucket, key)


def test_in_flight_parts_are_bounded_by_max_concurrency(make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.slow("UploadPart", seconds=0.3)
    store = make_store(s3_bucket, endpoint=fault_proxy.url, max_concurrency=2)
    key = unique_key()
    data = payload(31 * MiB)
    with store.writer(key, expected_size=len(data)) as writer:
        stream(writer, data)
        writer.commit()
    assert fault_proxy.count("UploadPart") == 7
    assert fault_proxy.max_in_flight["UploadPart"] == 2  # parallel, and never more than allowed
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data


def test_delete_objects_falls_back_to_single_deletes_when_not_implemented(
        make_store, s3_bucket, s3_client, fault_proxy):
    fault_proxy.fail("DeleteObjects", times=float("inf"), status=501, code="NotImplemented",
                     message="A header you provided implies functionality that is not implemented")
    store = make_store(s3_bucket, endpoint=fault_proxy.url)
    keys = [f"gcs/{i}" for i in range(3)]
    for key in keys:
        store.put_bytes(key, b"x")
    store.delete_keys(keys)
    assert fault_proxy.count("DeleteObjects") == 1
    assert fault_proxy.count("DeleteObject") == 3
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="gcs/")["KeyCount"] == 0


def _count_attempts(store) -> list[str]:
    """One entry per request botocore is about to send (before it connects): our attempts, counted."""
    sent: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    return sent


def test_connection_refused_is_transient_and_retried(make_store, s3_bucket):
    """Nothing listens on the port: an outage looks exactly like this, so it is retried, never blamed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
        store = make_store(s3_bucket, endpoint=dead, max_attempts=3)
        sent = _count_attempts(store)
        with pytest.raises(TransientFault, match="gave up after 3 attempts") as error:
            store.validate()
    assert error.value.code == "EndpointConnectionError"
    assert sent == ["PUT"] * 3


def test_host_name_that_does_not_resolve_is_the_customers_fault_at_once(make_store, s3_bucket):
    """RFC 6761 reserves .invalid: it never resolves, and no connection is attempted. (The resolver is
    asked once, and says the name does not exist; that answer, not an outage, is what blames the customer.)"""
    store = make_store(s3_bucket, endpoint="http://s3.exports-pipeline-test.invalid:9000", max_attempts=5)
    sent = _count_attempts(store)
    with pytest.raises(CustomerFault, match="host name does not resolve") as error:
        store.validate()
    assert error.value.code == "EndpointConnectionError"
    assert sent == ["PUT"]  # not retried


def test_certificate_that_does_not_verify_is_the_customers_fault_at_once(make_store, s3_bucket, tls_server):
    """The server presents a self-signed certificate: a statement of the server (its identity is not the
    endpoint's), the same on every retry. A handshake cut short, by contrast, stays transient."""
    store = make_store(s3_bucket, endpoint=tls_server, max_attempts=5)
    sent = _count_attempts(store)
    with pytest.raises(CustomerFault, match="certificate does not verify") as error:
        store.validate()
    assert error.value.code == "SSLError"
    assert sent == ["PUT"]
