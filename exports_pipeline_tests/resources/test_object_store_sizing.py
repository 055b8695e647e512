"""Pure functions: part size selection, error classification, retry backoff, resource settings."""

from __future__ import annotations

import errno
import socket
import ssl
import threading

import dagster as dg
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from exports_pipeline.errors import ConfigError, CustomerFault, ObjectTooLarge, TransientFault
from exports_pipeline.resources.object_store import (
    LocalObjectStore,
    ObjectStoreResource,
    S3ObjectStore,
    choose_part_size,
    classify_local_error,
    classify_s3_error,
)
from exports_pipeline.retry import RetryPolicy, call_with_retries
from exports_pipeline.resources.object_store.sizing import GiB, MiB, TiB


@pytest.mark.parametrize("expected, part", [
    (0, 8 * MiB),
    (10 * MiB, 8 * MiB),
    (100 * GiB, 13 * MiB),  # 100 GiB × 1.25 / 10,000 = 12.8 MiB → 13 MiB
    (1 * TiB, 132 * MiB),  # 131.07 MiB → 132 MiB
    (4 * TiB, 512 * MiB),  # would want 525 MiB: capped at max_part, still fits (4.88 TiB)
    (None, 64 * MiB),
])
def test_part_size_grows_with_expected_size(expected, part):
    assert choose_part_size(expected) == part
    if expected is not None:
        assert part * 10_000 >= expected


def test_part_size_is_a_whole_number_of_mib_and_never_below_the_minimum():
    assert choose_part_size(10 * MiB, min_part_size=5 * MiB) == 5 * MiB
    assert choose_part_size(200 * GiB + 1, min_part_size=5 * MiB) % MiB == 0


def test_sixty_tib_cannot_be_one_s3_object():
    with pytest.raises(ObjectTooLarge, match=r"exceeds the largest S3 object: 5 TiB.*48.8 TiB"):
        choose_part_size(60 * TiB, max_part_size=5 * 1024 * MiB)


def test_expected_size_beyond_the_max_part_cap_says_what_to_raise():
    with pytest.raises(ObjectTooLarge, match="max_part_size_mb"):
        choose_part_size(int(4.9 * TiB))  # 512 MiB × 10,000 = 4.88 TiB
    assert choose_part_size(int(4.9 * TiB), max_part_size=5120 * MiB) == 643 * MiB  # 642.3 MiB rounded up
    with pytest.raises(ConfigError):
        choose_part_size(-1)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart")


@pytest.mark.parametrize("code, status, kind", [
    ("InvalidAccessKeyId", 403, CustomerFault),
    ("SignatureDoesNotMatch", 403, CustomerFault),
    ("AccessDenied", 403, CustomerFault),
    ("AllAccessDisabled", 403, CustomerFault),
    ("AccountProblem", 403, CustomerFault),
    ("AuthorizationHeaderMalformed", 400, CustomerFault),
    ("NoSuchBucket", 404, CustomerFault),
    ("InvalidBucketName", 400, CustomerFault),
    ("PermanentRedirect", 301, CustomerFault),
    ("301", 301, CustomerFault),  # HEAD: no body, no code
    ("403", 403, CustomerFault),
    ("KMS.NotFoundException", 400, CustomerFault),
    ("SlowDown", 503, TransientFault),
    ("InternalError", 500, TransientFault),
    ("ServiceUnavailable", 503, TransientFault),
    ("RequestTimeout", 400, TransientFault),
    ("Throttling", 400, TransientFault),
    ("TooManyRequests", 429, TransientFault),
    ("BadGateway", 502, TransientFault),
    ("NoSuchUpload", 404, type(None)),
    ("InvalidPart", 400, type(None)),
    ("EntityTooSmall", 400, type(None)),
])
def test_s3_error_codes_are_classified(code, status, kind):
    fault = classify_s3_error(_client_error(code, status), operation="UploadPart", target="s3://b/k")
    assert isinstance(fault, kind)
    if fault is not None:
        assert fault.code == code
        assert f"UploadPart s3://b/k failed: {code}" in str(fault) and f"HTTP {status}" in str(fault)


def test_network_errors_are_transient_unless_a_name_or_certificate_is_refused():
    """Only statements are the customer's: a name the resolver says does not exist, a certificate that
    does not verify. A resolver that cannot be reached says nothing about the name."""
    for exc in (ReadTimeoutError(endpoint_url="http://x"), ConnectionClosedError(endpoint_url="http://x"),
                EndpointConnectionError(endpoint_url="http://x", error=ConnectionRefusedError(111, "refused")),
                EndpointConnectionError(endpoint_url="http://x",
                                        error=socket.gaierror(socket.EAI_AGAIN, "Temporary failure")),
                SSLError(endpoint_url="https://x", error=ssl.SSLEOFError(8, "EOF in violation of protocol"))):
        assert isinstance(classify_s3_error(exc), TransientFault), exc
    no_such_name = EndpointConnectionError(endpoint_url="http://x",
                                           error=socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    fault = classify_s3_error(no_such_name)
    assert isinstance(fault, CustomerFault) and fault.code == "EndpointConnectionError"
    assert "does not resolve" in str(fault)
    untrusted = SSLError(endpoint_url="https://x", error=ssl.SSLCertVerificationError(1, "self-signed certificate"))
    assert isinstance(classify_s3_error(untrusted), CustomerFault)
    assert isinstance(classify_s3_error(NoCredentialsError()), CustomerFault)
    assert classify_s3_error(ValueError("our bug")) is None


def test_local_errors_are_classified():
    assert isinstance(classify_local_error(PermissionError(errno.EACCES, "Permission denied")), CustomerFault)
    assert isinstance(classify_local_error(OSError(errno.EROFS, "Read-only file system")), CustomerFault)
    assert isinstance(classify_local_error(FileNotFoundError(errno.ENOENT, "gone")), CustomerFault)
    assert classify_local_error(OSError(errno.ENOSPC, "No space left")) is None
    assert classify_local_error(ValueError("x")) is None


def test_backoff_is_full_jitter_within_the_cap():
    policy = RetryPolicy(max_attempts=10, backoff_base_seconds=0.5, backoff_max_seconds=4.0)
    delays = [policy.delay(attempt) for attempt in (1, 2, 3, 8) for _ in range(200)]
    assert all(0 <= d <= 0.5 for d in delays[:200])
    assert all(0 <= d <= 4.0 for d in delays[600:]) and max(delays[600:]) > 2.0  # capped, not 64 s
    assert min(delays[600:]) < 2.0  # full jitter: anywhere from zero


def test_call_with_retries_retries_only_transient_faults():
    policy = RetryPolicy(max_attempts=4, backoff_base_seconds=0.001, backoff_max_seconds=0.001)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _client_error("SlowDown", 503)
        return "done"

    classify = classify_s3_error
    assert call_with_retries(flaky, policy=policy, classify=classify, what="t") == "done"
    assert len(calls) == 3
    calls.clear()

    def denied():
        calls.append(1)
        raise _client_error("AccessDenied", 403)

    with pytest.raises(CustomerFault):
        call_with_retries(denied, policy=policy, classify=classify, what="t")
    assert len(calls) == 1
    cancel = threading.Event()
    cancel.set()
    calls.clear()
    with pytest.raises(TransientFault):
        call_with_retries(flaky, policy=policy, classify=classify, what="t", cancel=cancel)
    assert len(calls) == 1  # cancelled: no retry


@pytest.mark.parametrize("field, value", [
    ("min_part_size_mb", 4), ("max_part_size_mb", 5121), ("max_concurrency", 0), ("max_attempts", 0),
    ("default_part_size_mb", 1024), ("read_timeout", 0),
])
def test_resource_refuses_unsafe_settings(field, value, tmp_path):
    resource = ObjectStoreResource(**{field: value})
    with pytest.raises(ConfigError) as error:
        resource.open(tmp_path.as_uri())
    assert error.value.field == field


def test_resource_opens_the_right_store_and_works_inside_dagster(tmp_path):
    resource = ObjectStoreResource(max_concurrency=2)
    s3 = resource.open("s3://bucket/p/")
    assert isinstance(s3, S3ObjectStore) and s3.settings.max_concurrency == 2
    assert s3.client.meta.config.retries["total_max_attempts"] == 1
    assert s3.client.meta.config.max_pool_connections >= 4
    s3.close()

    @dg.asset
    def exported(object_store: ObjectStoreResource) -> dg.MaterializeResult:
        with object_store.open(tmp_path.as_uri() + "/") as store:
            written = store.put_bytes("w/manifest.json", b"{}", "application/json")
        return dg.MaterializeResult(metadata={"dagster/uri": written.uri, "sha256": written.sha256})

    result = dg.materialize([exported], resources={"object_store": resource})
    assert result.success
    assert (tmp_path / "w/manifest.json").read_bytes() == b"{}"
    assert isinstance(resource.open(tmp_path.as_uri()), LocalObjectStore)
