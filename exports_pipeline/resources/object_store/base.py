"""The object store contract shared by S3 and local directories.

The export engine only ever sees these types, so a window exported to ``file://`` in a demo and to S3
in production goes through the same code. The one guarantee that matters: nothing appears under a
final key unless ``commit()`` succeeded completely; a failed or abandoned writer leaves no object and
no pending upload behind.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from exports_pipeline.errors import ConfigError, CustomerFault
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.resources.object_store.sizing import MiB, S3_MAX_PART_SIZE, S3_MIN_PART_SIZE

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MAX_KEY_BYTES = 1024  # S3's limit; local keys are held to it too so both behave alike


@dataclass(frozen=True)
class WrittenObject:
    """One committed object; ``size`` and ``sha256`` are of the bytes as stored."""

    key: str
    uri: str
    size: int
    sha256: str
    content_type: str
    etag: str | None = None


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    uri: str
    detail: str


@dataclass(frozen=True)
class StoreSettings:
    """Tunables in bytes and seconds; ``ObjectStoreResource`` builds these from its MiB fields."""

    min_part_size: int = 8 * MiB
    max_part_size: int = 512 * MiB
    default_part_size: int = 64 * MiB
    max_concurrency: int = 4
    max_attempts: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"{field}: {why}", field=field)

        if self.min_part_size < S3_MIN_PART_SIZE:
            raise bad("min_part_size_mb", "S3 parts must be at least 5 MiB")
        if self.max_part_size > S3_MAX_PART_SIZE:
            raise bad("max_part_size_mb", "S3 parts can be at most 5 GiB (5120 MiB)")
        if self.min_part_size > self.max_part_size:
            raise bad("min_part_size_mb", "must not exceed max_part_size_mb")
        if not self.min_part_size <= self.default_part_size <= self.max_part_size:
            raise bad("default_part_size_mb", "must lie between min_part_size_mb and max_part_size_mb")
        if not 1 <= self.max_concurrency <= 64:
            raise bad("max_concurrency", "must be between 1 and 64")
        if self.max_attempts < 1:
            raise bad("max_attempts", "must be at least 1")
        if self.backoff_base_seconds < 0 or self.backoff_max_seconds < 0:
            raise bad("backoff_base_seconds", "backoff must not be negative")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise bad("read_timeout" if self.read_timeout <= 0 else "connect_timeout", "must be positive")


def check_key(key: str, *, field: str = "key") -> str:
    """A non-empty relative key of at most 1024 UTF-8 bytes."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{field} must be a non-empty string", field=field)
    if key.startswith("/"):
        raise ConfigError(f"{field} must not start with '/': {key!r}", field=field)
    if "\x00" in key or len(key.encode()) > _MAX_KEY_BYTES:
        raise ConfigError(f"{field} must be at most 1024 bytes without NUL: {key[:80]!r}…", field=field)
    return key


class ObjectWriter(abc.ABC):
    """A streaming upload to one key: ``write()`` bytes, then ``commit()`` or ``abort()``.

    Use it as a context manager: an exception inside the block aborts; leaving the block without
    committing aborts too and raises, since silently dropping an export is a bug. It is a writable
    binary sink (``write`` returns the byte count, ``flush`` is a no-op), so ``gzip.GzipFile`` and
    ``zstandard``'s ``stream_writer`` can wrap it. One thread per writer.
    """

    def __init__(self, key: str, content_type: str) -> None:
        self.key = key
        self.content_type = content_type
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._state = "open"  # open | committed | aborted

    # --- subclass hooks

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    @abc.abstractmethod
    def commit(self) -> WrittenObject: ...

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written; idempotent, never raises for remote cleanup failures."""

    # --- shared behaviour

    @property
    def bytes_written(self) -> int:
        return self._size

    @property
    def part_size(self) -> int | None:
        """Bytes per multipart part (S3), None where parts do not exist."""
        return None

    @property
    def capacity(self) -> int | None:
        """The most bytes this writer can take (S3: part size × part limit), None if unbounded."""
        return None

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing to flush: data reaches the store on part boundaries and at commit."""

    def _require_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"writer for {self.key!r} is already {self._state}")

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        if self._state == "open":
            self.abort()
            raise RuntimeError(f"writer for {self.key!r} left without commit() or abort(); aborted")


class ObjectStore(abc.ABC):
    """Objects under one destination; all keys are full keys (prefix included)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination

    def uri(self, key: str) -> str:
        return self.destination.uri(key)

    @abc.abstractmethod
    def writer(self, key: str, content_type: str = DEFAULT_CONTENT_TYPE,
               expected_size: int | None = None) -> ObjectWriter: ...

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> WrittenObject:
        """Write a small object (a manifest) with the same all-or-nothing guarantee as ``writer``."""
        with self.writer(key, content_type, expected_size=len(data)) as writer:
            writer.write(data)
            return writer.commit()

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object; ``ObjectNotFound`` if the key does not exist."""

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A streaming, buffered reader (close it, or use ``with``); ``ObjectNotFound`` if missing."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` (a full-key prefix, may be ''), sorted."""

    @abc.abstractmethod
    def delete_keys(self, keys: list[str]) -> None:
        """Delete all of ``keys``; missing keys are fine; raises if any key could not be deleted."""

    @abc.abstractmethod
    def presign_get(self, key: str, expires_seconds: int, filename: str | None = None) -> str:
        """A URL that downloads ``key`` as an attachment without credentials."""

    @abc.abstractmethod
    def discard_incomplete(self, keys: list[str]) -> int:
        """Remove what writers to ``keys`` that never finished left behind (a killed process's pending
        multipart uploads, hidden temporary files); returns how many. Committed objects are untouched."""

    def scratch_root(self) -> str:
        """Where the engine's scratch files for this destination go: a local disk directory."""
        return os.environ.get("EXPORTS_SCRATCH_DIR") or tempfile.gettempdir()

    def validate(self) -> ValidationResult:
        """Prove the destination works end to end: write, read back, compare, delete a probe object.

        Raises ``CustomerFault`` / ``TransientFault`` carrying the store's own error code.
        """
        key = self.destination.key_for(f"exports-pipeline-validation-{uuid.uuid4().hex}.txt")
        probe = f"exports_pipeline destination check {uuid.uuid4()}\n".encode()
        self.put_bytes(key, probe, "text/plain; charset=utf-8")
        try:
            echoed = self.get_bytes(key)
            if echoed != probe:
                raise CustomerFault(
                    f"{self.uri(key)} read back {len(echoed)} bytes that differ from the {len(probe)} "
                    "bytes written: the endpoint does not behave like object storage",
                    code="ReadBackMismatch",
                )
        except BaseException:
            with contextlib.suppress(Exception):  # the read's error is the one worth reporting
                self.delete_keys([key])
            raise
        self.delete_keys([key])  # exports delete superseded files, so deleting must work too
        return ValidationResult(ok=True, uri=self.destination.url,
                                detail=f"wrote, read back and deleted {self.uri(key)}")

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
