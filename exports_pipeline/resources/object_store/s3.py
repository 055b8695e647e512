"""S3 and S3-compatible stores: the only code that speaks the S3 API.

One boto3 client per store with botocore's retries off (``total_max_attempts=1``): every call goes
through ``call_with_retries`` so retries are classified and logged. Checksums are sent only when an
operation requires them (``when_required``) because several S3-compatible stores reject the
flexible-checksum headers boto3 ≥ 1.36 sends by default (boto/s3transfer#327); uploads carry a
``Content-MD5`` instead, which S3 and its compatibles all verify, and which lets botocore skip payload
signing over HTTPS (TLS plus MD5 protect the body). Over plain HTTP botocore signs every body's SHA-256
(SigV4 ``x-amz-content-sha256``, which the server checks), so there a Content-MD5 would only be a second
checksum of the same bytes: another pass over every byte here and on the server; it is not sent.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from exports_pipeline.errors import ConfigError, CustomerFault, ExportsError, ObjectNotFound, TransientFault
from exports_pipeline.resources.object_store.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectStore,
    StoreSettings,
    check_key,
)
from exports_pipeline.resources.object_store.classify import (
    classify_s3_error,
    error_code,
    fault_for_failures,
    is_transient_code,
)
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.retry import RetryPolicy, call_with_retries
from exports_pipeline.resources.object_store.s3_writer import S3Writer
from exports_pipeline.resources.object_store.sizing import choose_part_size

T = TypeVar("T")
DELETE_BATCH = 1000  # DeleteObjects limit
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 limit


class S3ObjectStore(ObjectStore):
    """Objects in one bucket of S3 or an S3-compatible service (MinIO, R2, GCS via HMAC, ...)."""

    def __init__(self, destination: Destination, settings: StoreSettings | None = None) -> None:
        if destination.scheme != "s3":
            raise ConfigError(f"S3ObjectStore needs an s3:// destination, not {destination.url}",
                              field="scheme")
        super().__init__(destination)
        self.settings = settings or StoreSettings()
        self.policy = RetryPolicy(self.settings.max_attempts, self.settings.backoff_base_seconds,
                                  self.settings.backoff_max_seconds)
        self.bucket = destination.bucket
        self.client = _make_client(destination, self.settings)
        # https (AWS when no endpoint is given): Content-MD5 is the body's integrity check; http: the
        # signed payload hash is (see the module docstring).
        self.sends_content_md5 = not (destination.endpoint_url or "").lower().startswith("http://")
        secret = destination.secret_access_key
        self._secret = secret.get_secret_value() if secret is not None else None

    # ----------------------------------------------------------------------------- the call gate

    def call(self, operation: str, key: str | None, fn: Callable[[], T], *,
             cancel: threading.Event | None = None) -> T:
        """``fn()`` (one S3 request) with our retries.

        Every S3/botocore failure leaves as an ``ExportsError`` subclass naming operation, target and
        code; anything else (a bug of ours) propagates untouched.
        """
        target = self.uri(key) if key is not None else f"s3://{self.bucket}"

        def classify(exc: Exception) -> ExportsError | None:
            fault = classify_s3_error(exc, operation=operation, target=target)
            if fault is None and isinstance(exc, (ClientError, BotoCoreError)):
                fault = _unclassified(exc, operation, target)
            return self._scrub(fault) if fault is not None else None

        try:
            return call_with_retries(fn, policy=self.policy, classify=classify,
                                     what=f"S3 {operation} {target}", cancel=cancel)
        except ExportsError as fault:
            if self._secret and self._secret in str(fault.__cause__):
                # the chained botocore error would show it in the Dagster UI
                fault.__cause__ = fault.__context__ = None
                fault.__suppress_context__ = True
            raise

    def _scrub(self, fault: ExportsError) -> ExportsError:
        """Belt and braces: no message leaves with the secret key in it, whatever the server echoed."""
        if self._secret and self._secret in str(fault):
            return type(fault)(str(fault).replace(self._secret, "**********"), code=fault.code)
        return fault

    def sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.destination.sse:
            args["ServerSideEncryption"] = self.destination.sse
        if self.destination.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.destination.sse_kms_key_id
        return args

    # ------------------------------------------------------------------------------------- writes

    def writer(self, key: str, content_type: str = DEFAULT_CONTENT_TYPE,
               expected_size: int | None = None) -> S3Writer:
        check_key(key)
        part_size = choose_part_size(
            expected_size,
            min_part_size=self.settings.min_part_size,
            max_part_size=self.settings.max_part_size,
            default_part_size=self.settings.default_part_size,
        )
        return S3Writer(self, key, content_type, part_size)

    # -------------------------------------------------------------------------------------- reads

    def get_bytes(self, key: str) -> bytes:
        check_key(key)

        def fetch() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return self._not_found_as(key, lambda: self.call("GetObject", key, fetch))

    def open_read(self, key: str) -> BinaryIO:
        check_key(key)
        response = self._not_found_as(
            key, lambda: self.call("GetObject", key,
                                   lambda: self.client.get_object(Bucket=self.bucket, Key=key)))
        return io.BufferedReader(_BodyReader(response["Body"], self.uri(key)), buffer_size=256 * 1024)

    def exists(self, key: str) -> bool:
        check_key(key)
        try:
            self.call("HeadObject", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ExportsError as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        if prefix.startswith("/"):
            raise ConfigError(f"prefix must not start with '/': {prefix!r}", field="prefix")
        keys: list[str] = []
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                args["ContinuationToken"] = token
            page = self.call("ListObjectsV2", prefix or None,
                             lambda args=args: self.client.list_objects_v2(**args))
            keys.extend(item["Key"] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]

    def _not_found_as(self, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ExportsError as exc:
            if exc.code in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"{self.uri(key)} does not exist", code="NoSuchKey") from exc
            raise

    # ------------------------------------------------------------------------------------ deletes

    def delete_keys(self, keys: list[str]) -> None:
        """DeleteObjects in batches of 1000; per-key transient errors are retried for those keys only.

        Stores without DeleteObjects (GCS's XML API answers NotImplemented) get one DELETE per key.
        """
        unique = list(dict.fromkeys(check_key(key) for key in keys))
        failures: list[tuple[str, str, str]] = []
        for start in range(0, len(unique), DELETE_BATCH):
            batch = unique[start:start + DELETE_BATCH]
            try:
                failures.extend(self._delete_batch(batch))
            except CustomerFault as exc:
                if exc.code != "NotImplemented":
                    raise
                for key in unique[start:]:
                    self.call("DeleteObject", key,
                              lambda key=key: self.client.delete_object(Bucket=self.bucket, Key=key))
                break
        if failures:
            raise fault_for_failures(f"DeleteObjects s3://{self.bucket}", failures)

    def _delete_batch(self, batch: list[str]) -> list[tuple[str, str, str]]:
        """The keys of one DeleteObjects batch that could not be deleted, as (key, code, message)."""
        failed: list[tuple[str, str, str]] = []
        pending = batch
        for attempt in range(1, self.settings.max_attempts + 1):
            request = {"Objects": [{"Key": key} for key in pending], "Quiet": True}
            response = self.call("DeleteObjects", None,
                                 lambda: self.client.delete_objects(Bucket=self.bucket, Delete=request))
            errors = [(e.get("Key", ""), e.get("Code", "Unknown"), e.get("Message", ""))
                      for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            retryable = [error for error in errors if is_transient_code(error[1])]
            failed.extend(error for error in errors if not is_transient_code(error[1]))
            if not retryable:
                return failed
            if attempt == self.settings.max_attempts:
                return failed + retryable
            pending = [key for key, _, _ in retryable]
            time.sleep(self.policy.delay(attempt))
        return failed

    def discard_incomplete(self, keys: list[str]) -> int:
        """Abort the multipart uploads pending under ``keys``: a process killed mid-upload leaves its
        parts stored (and billed) until a lifecycle rule, if any, removes them. One listing under the
        keys' common prefix; uploads of other keys under it are left alone."""
        wanted = {check_key(key) for key in keys}
        if not wanted:
            return 0
        prefix = os.path.commonprefix(sorted(wanted))
        pending: list[tuple[str, str]] = []
        marker: dict[str, str] = {}
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **marker}
            page = self.call("ListMultipartUploads", prefix or None,
                             lambda args=args: self.client.list_multipart_uploads(**args))
            pending.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []) if u["Key"] in wanted)
            if not page.get("IsTruncated"):
                break
            marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
        for key, upload_id in pending:
            try:
                self.call("AbortMultipartUpload", key, lambda key=key, upload_id=upload_id:
                          self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id))
            except ExportsError as exc:
                if exc.code != "NoSuchUpload":  # gone meanwhile: that is the goal
                    raise
        return len(pending)

    # ----------------------------------------------------------------------------------- sharing

    def presign_get(self, key: str, expires_seconds: int, filename: str | None = None) -> str:
        check_key(key)
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise ConfigError(f"expires_seconds must be between 1 and {MAX_PRESIGN_SECONDS} (7 days), "
                              f"got {expires_seconds}", field="expires_seconds")
        params = {
            "Bucket": self.bucket,
            "Key": key,
            "ResponseContentDisposition": content_disposition(filename or key.rsplit("/", 1)[-1]),
        }
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)

    def close(self) -> None:
        self.client.close()


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / 8187)."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _make_client(destination: Destination, settings: StoreSettings) -> Any:
    """A client of its own (Session per store: boto3's default session is not thread-safe)."""
    secret = destination.secret_access_key
    session = boto3.session.Session(
        aws_access_key_id=destination.access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        region_name=destination.region,
    )
    config = Config(
        region_name=destination.region,
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": 1},
        s3={"addressing_style": "path" if destination.force_path_style else "auto"},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=max(10, settings.max_concurrency + 2),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    return session.client("s3", endpoint_url=destination.endpoint_url, config=config)


def _unclassified(exc: ClientError | BotoCoreError, operation: str, target: str) -> ExportsError:
    """An S3 error we do not recognise: neither retried nor blamed on the customer, but named."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{operation} {target} failed: {error_code(exc)}: {error.get('Message', '')} (HTTP {status})"
    else:
        text = f"{operation} {target} failed: {type(exc).__name__}: {exc}"
    return ExportsError(text[:1000], code=error_code(exc))


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore body whose network errors leave as ``TransientFault``."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, OSError) as exc:
            fault = classify_s3_error(exc, operation="GetObject (streaming)", target=self._uri)
            raise (fault or TransientFault(f"GetObject {self._uri} failed while streaming: {exc}")) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
