"""A local directory as an object store: the embedded default and the demo's destination.

Same contract as S3, including atomicity: data goes to a hidden temporary file beside the final one
(``.{name}.tmp-{uuid}``), is fsynced, and ``os.replace`` publishes it in one step, so a reader sees the
old object or the new one, never a half-written file. Temporary files are invisible to ``list_keys``.
The directory itself must exist, like an S3 bucket; sub-directories are created as keys need them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from exports_pipeline.errors import ConfigError, CustomerFault, ExportsError, ObjectNotFound
from exports_pipeline.resources.object_store.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectStore,
    ObjectWriter,
    WrittenObject,
    check_key,
)
from exports_pipeline.resources.object_store.classify import classify_local_error
from exports_pipeline.resources.object_store.destination import Destination

SCRATCH_PREFIX = ".exports-scratch-"
TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


class LocalObjectStore(ObjectStore):
    """Objects as files under ``destination.bucket`` (an absolute directory)."""

    def __init__(self, destination: Destination) -> None:
        if destination.scheme != "file":
            raise ConfigError(f"LocalObjectStore needs a file:// destination, not {destination.url}",
                              field="scheme")
        super().__init__(destination)
        self.root = destination.bucket

    # ------------------------------------------------------------------------------------ helpers

    def path(self, key: str) -> str:
        """The file of ``key``; keys cannot climb out of the root."""
        check_key(key)
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ConfigError(f"key must not contain empty, '.' or '..' segments: {key!r}", field="key")
        return os.path.join(self.root, *parts)

    def _require_root(self, operation: str, key: str) -> None:
        if not os.path.isdir(self.root):
            raise CustomerFault(f"{operation} {self.uri(key)} failed: directory {self.root} does not exist "
                                "(create it, or fix the destination URL)", code="NoSuchDirectory")

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            fault = classify_local_error(exc, operation=operation, target=self.uri(key))
            if fault is None:
                raise
            raise fault from exc

    # ------------------------------------------------------------------------------------- writes

    def writer(self, key: str, content_type: str = DEFAULT_CONTENT_TYPE,
               expected_size: int | None = None) -> LocalWriter:
        if expected_size is not None and expected_size < 0:
            raise ConfigError(f"expected_size must be ≥ 0, got {expected_size}", field="expected_size")
        return LocalWriter(self, key, content_type)

    # -------------------------------------------------------------------------------------- reads

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            return fh.read()

    def open_read(self, key: str) -> BinaryIO:
        path = self.path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            self._require_root("read", key)
            raise ObjectNotFound(f"{self.uri(key)} does not exist", code="NoSuchKey") from exc
        except OSError as exc:
            fault = classify_local_error(exc, operation="read", target=self.uri(key))
            if fault is None:
                raise
            raise fault from exc

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def list_keys(self, prefix: str) -> list[str]:
        if prefix.startswith("/"):
            raise ConfigError(f"prefix must not start with '/': {prefix!r}", field="prefix")
        self._require_root("list", prefix)
        folder = prefix.rpartition("/")[0]
        if folder and any(part in ("", ".", "..") for part in folder.split("/")):
            raise ConfigError(f"prefix must not contain empty, '.' or '..' segments: {prefix!r}",
                              field="prefix")
        start = os.path.join(self.root, *folder.split("/")) if folder else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(SCRATCH_PREFIX)]
            relative = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in filenames:
                if TEMP_NAME.match(name):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    # ------------------------------------------------------------------------------------ deletes

    def delete_keys(self, keys: list[str]) -> None:
        failures: list[tuple[str, ExportsError | OSError]] = []
        for key in keys:
            path = self.path(key)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                failures.append((key, classify_local_error(exc, operation="delete",
                                                           target=self.uri(key)) or exc))
        if failures:
            first = failures[0][1]
            shown = "; ".join(str(error) for _, error in failures[:10])
            message = f"delete under {self.destination.url}: {len(failures)} key(s) failed: {shown}"
            if isinstance(first, ExportsError):
                raise type(first)(message[:1000], code=first.code)
            raise ExportsError(message[:1000], code=errno.errorcode.get(first.errno or 0))

    # ------------------------------------------------------------------------ engine-written files

    def scratch_root(self) -> str:
        """The destination itself, so a file the engine wrote there is renamed into place (same
        filesystem) instead of copied; scratch directories are hidden and never listed as keys."""
        self._require_root("write", SCRATCH_PREFIX)
        return self.root

    def scratch_dir(self) -> str:
        """A fresh hidden scratch directory inside the destination."""
        path = os.path.join(self.scratch_root(), f"{SCRATCH_PREFIX}{uuid.uuid4().hex}")
        with self._errors("write", SCRATCH_PREFIX):
            os.makedirs(path)
        return path

    def discard_incomplete(self, keys: list[str]) -> int:
        """The hidden temporary files (``.{name}.tmp-{uuid}``) that writers to ``keys`` left when their
        process died before the rename."""
        removed = 0
        by_dir: dict[str, set[str]] = {}
        for key in keys:
            parent, name = os.path.split(self.path(key))
            by_dir.setdefault(parent, set()).add(name)
        for parent, names in by_dir.items():
            try:
                entries = os.listdir(parent)
            except FileNotFoundError:
                continue
            for entry in entries:
                if TEMP_NAME.match(entry) and entry[1:].rsplit(".tmp-", 1)[0] in names:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(parent, entry))
                        removed += 1
        return removed

    def adopt(self, key: str, source: str, content_type: str = DEFAULT_CONTENT_TYPE, *,
              sha256: str | None = None, size: int | None = None) -> WrittenObject:
        """Move a finished file (from `scratch_dir()`) to `key` atomically, without copying its bytes:
        hashed (unless the caller hashed it while it was written and passes `sha256` and `size`),
        fsynced, renamed; until then nothing exists under the key."""
        path = self.path(key)
        with self._errors("commit", key):
            with open(source, "rb") as fh:
                if sha256 is None:
                    digest, size = hashlib.sha256(), 0
                    while block := fh.read(8 << 20):
                        digest.update(block)
                        size += len(block)
                    sha256 = digest.hexdigest()
                elif os.fstat(fh.fileno()).st_size != size:
                    raise ExportsError(f"{source} is {os.fstat(fh.fileno()).st_size} bytes, not the {size} "
                                       "hashed while it was written; not adopting it", code="SizeMismatch")
                os.fsync(fh.fileno())
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(source, path)
        _fsync_directory(os.path.dirname(path))
        return WrittenObject(key=key, uri=self.uri(key), size=int(size or 0), sha256=sha256,
                             content_type=content_type)

    def presign_get(self, key: str, expires_seconds: int, filename: str | None = None) -> str:
        """Local files need no signature: the ``file://`` URI is the download link."""
        self.path(key)
        return self.uri(key)


class LocalWriter(ObjectWriter):
    """Writes to a temporary file beside the target and renames it into place at commit."""

    def __init__(self, store: LocalObjectStore, key: str, content_type: str) -> None:
        super().__init__(key, content_type)
        self._store = store
        self._path = store.path(key)
        store._require_root("write", key)
        parent, name = os.path.split(self._path)
        self._temp_path = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
        with store._errors("write", key):
            os.makedirs(parent, exist_ok=True)
            self._file = open(self._temp_path, "xb")

    @property
    def temp_path(self) -> str:
        return self._temp_path

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._require_open()
        try:
            with self._store._errors("write", self.key):
                written = self._file.write(data)
        except BaseException:
            self.abort()
            raise
        self._sha256.update(data)
        self._size += written
        return written

    def commit(self) -> WrittenObject:
        self._require_open()
        try:
            with self._store._errors("commit", self.key):
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._temp_path, self._path)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        _fsync_directory(os.path.dirname(self._path))
        return WrittenObject(key=self.key, uri=self._store.uri(self.key), size=self._size,
                             sha256=self._sha256.hexdigest(), content_type=self.content_type)

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp_path)


def _fsync_directory(path: str) -> None:
    """Make the rename durable; best effort (not every filesystem lets a directory be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
