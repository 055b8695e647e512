"""Streaming multipart upload that either completes whole or leaves nothing behind.

Bytes are cut into equal parts (only the last may be shorter: R2 requires equal parts, S3 does not
care) and uploaded by a small thread pool while the caller keeps producing. A semaphore keeps at most
``max_concurrency`` parts in flight, so memory stays near part_size × (max_concurrency + 1) however
large the object. An object that never fills one part is sent with a single PutObject at commit.

Failure anywhere (a part, the producer, a Python exception inside ``with``, the 10,000-part cap) stops
the other parts, waits for in-flight requests, and aborts the multipart upload: S3 never shows an
uncommitted or truncated object under the key (Langfuse #17282 committed a truncated one).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from exports_pipeline.errors import ExportsError, ObjectTooLarge
from exports_pipeline.resources.object_store import sizing
from exports_pipeline.resources.object_store.base import ObjectWriter, WrittenObject
from exports_pipeline.resources.object_store.classify import error_code
from exports_pipeline.resources.object_store.sizing import human_bytes

if TYPE_CHECKING:
    from exports_pipeline.resources.object_store.s3 import S3ObjectStore

log = logging.getLogger(__name__)


class _Cancelled(Exception):
    """A queued part that must not start because another part already failed."""


class S3Writer(ObjectWriter):
    def __init__(self, store: S3ObjectStore, key: str, content_type: str, part_size: int) -> None:
        super().__init__(key, content_type)
        self._store = store
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._next_part = 1
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.Semaphore(store.settings.max_concurrency)
        self._futures: list[Future[tuple[int, str]]] = []
        self._cancel = threading.Event()
        self._failure: BaseException | None = None
        self._failure_lock = threading.Lock()

    # --------------------------------------------------------------------------------- properties

    @property
    def part_size(self) -> int:
        return self._part_size

    @property
    def capacity(self) -> int:
        return self._part_size * sizing.S3_MAX_PARTS

    @property
    def parts(self) -> int:
        """Parts handed to the uploader so far (0 while the object still fits one PutObject)."""
        return self._next_part - 1

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    # ---------------------------------------------------------------------------------- streaming

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._require_open()
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = view.nbytes
        if not size:
            return 0
        try:
            if self._size + size > self.capacity:
                raise self._too_large(self._size + size)
            self._raise_part_failure()
            self._sha256.update(view)
            offset = 0
            while offset < size:
                room = self._part_size - len(self._buffer)
                if room == 0:  # a full part and more data behind it: ship it
                    self._ship_buffer()
                    room = self._part_size
                take = min(room, size - offset)
                self._buffer += view[offset:offset + take]
                offset += take
            self._size += size
        except BaseException:
            self.abort()
            raise
        return size

    def commit(self) -> WrittenObject:
        self._require_open()
        try:
            self._raise_part_failure()
            if self._upload_id is None:
                etag = self._put_whole()
            else:
                self._ship_buffer()  # the last part: never empty, parts are cut only when more follows
                etag = self._complete()
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._shutdown_pool()
        return WrittenObject(key=self.key, uri=self._store.uri(self.key), size=self._size,
                             sha256=self._sha256.hexdigest(), content_type=self.content_type, etag=etag)

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._cancel.set()
        self._shutdown_pool()  # waits for in-flight parts: aborting under them can leave parts behind
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        upload_id = self._upload_id
        client = self._store.client
        try:
            self._store.call("AbortMultipartUpload", self.key, lambda: client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self.key, UploadId=upload_id))
        except ExportsError as exc:
            if exc.code != "NoSuchUpload":
                log.warning("could not abort multipart upload %s of %s (%s); its parts stay invisible until "
                            "a lifecycle rule (AbortIncompleteMultipartUpload) removes them",
                            upload_id, self._store.uri(self.key), exc)

    # ----------------------------------------------------------------------------------- internals

    def _too_large(self, would_be: int) -> ObjectTooLarge:
        return ObjectTooLarge(
            f"{self._store.uri(self.key)} outgrew S3's limit of {sizing.S3_MAX_PARTS:,} parts: with a part "
            f"size of {human_bytes(self._part_size)} it can hold {human_bytes(self.capacity)}, and "
            f"{human_bytes(self._size)} were written when a write would have made it "
            f"{human_bytes(would_be)}. The upload was aborted; nothing was committed. Pass a larger "
            "expected_size or roll over to a new file before writer.capacity."
        )

    def _raise_part_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _ship_buffer(self) -> None:
        if self._upload_id is None:
            self._start_multipart()
        assert self._pool is not None
        number = self._next_part
        self._next_part += 1
        body, self._buffer = self._buffer, bytearray()
        self._slots.acquire()  # blocks while max_concurrency parts are in flight
        if self._failure is not None:
            self._slots.release()
            raise self._failure
        future = self._pool.submit(self._upload_part, number, body)
        future.add_done_callback(self._part_done)
        self._futures.append(future)

    def _start_multipart(self) -> None:
        args: dict[str, Any] = {"Bucket": self._store.bucket, "Key": self.key,
                                "ContentType": self.content_type, **self._store.sse_args()}
        response = self._store.call("CreateMultipartUpload", self.key,
                                    lambda: self._store.client.create_multipart_upload(**args))
        self._upload_id = response["UploadId"]
        self._pool = ThreadPoolExecutor(max_workers=self._store.settings.max_concurrency,
                                        thread_name_prefix="s3-part")

    def _upload_part(self, number: int, body: bytearray) -> tuple[int, str]:
        checksum = _content_md5(body) if self._store.sends_content_md5 else {}

        def send() -> Any:
            if self._cancel.is_set():
                raise _Cancelled
            return self._store.client.upload_part(
                Bucket=self._store.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number,
                Body=body, **checksum)

        response = self._store.call(f"UploadPart #{number}", self.key, send, cancel=self._cancel)
        return number, response["ETag"]

    def _part_done(self, future: Future[tuple[int, str]]) -> None:
        self._slots.release()
        if future.cancelled():
            return
        error = future.exception()
        if error is None or isinstance(error, _Cancelled):
            return
        with self._failure_lock:
            if self._failure is None:
                self._failure = error
        self._cancel.set()

    def _put_whole(self) -> str | None:
        body = self._buffer
        args: dict[str, Any] = {"Bucket": self._store.bucket, "Key": self.key, "Body": body,
                                "ContentType": self.content_type, **self._store.sse_args(),
                                **(_content_md5(body) if self._store.sends_content_md5 else {})}
        response = self._store.call("PutObject", self.key, lambda: self._store.client.put_object(**args))
        return _etag(response)

    def _complete(self) -> str | None:
        results = sorted(future.result() for future in self._futures)
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in results]
        expected_etag = _multipart_etag([etag for _, etag in results])
        attempts = 0

        def complete() -> Any:
            nonlocal attempts
            attempts += 1
            try:
                return self._store.client.complete_multipart_upload(
                    Bucket=self._store.bucket, Key=self.key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts})
            except ClientError as exc:
                # The previous attempt may have completed the upload and lost only its response.
                if attempts > 1 and expected_etag and error_code(exc) == "NoSuchUpload":
                    head = self._store.client.head_object(Bucket=self._store.bucket, Key=self.key)
                    if _etag(head) == expected_etag:
                        return head
                raise

        response = self._store.call("CompleteMultipartUpload", self.key, complete)
        self._upload_id = None  # completed: nothing left to abort
        return _etag(response)

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _content_md5(body: bytes | bytearray) -> dict[str, str]:
    return {"ContentMD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()}


def _multipart_etag(part_etags: list[str]) -> str | None:
    """S3's ETag of a completed multipart object: md5 of the parts' binary md5s, "-", part count, where a
    part's ETag is its md5 in hex (not so with SSE-KMS or on some S3-compatibles: then None, and a lost
    completion response cannot be recognised, only reported)."""
    try:
        digests = b"".join(bytes.fromhex(e.strip('"')) for e in part_etags)
    except ValueError:
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def _etag(response: dict[str, Any]) -> str | None:
    etag = response.get("ETag")
    return etag.strip('"') if etag else None
