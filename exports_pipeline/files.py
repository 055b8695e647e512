"""From ClickHouse bytes to committed objects: framing, compression, rollover, counting.

Python never touches a row on these paths: it frames (a CSV header, a JSON array's brackets and
commas), counts record separators with `bytes.count`, compresses and hands bytes to the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pyarrow.parquet as pq

from exports_pipeline.errors import ExportCancelled
from exports_pipeline.formats import Compressor, Format, content_type, effective_compression, get_format
from exports_pipeline.resources.object_store.base import ObjectStore, ObjectWriter, WrittenObject
from exports_pipeline.resources.object_store.local import LocalObjectStore

COPY_CHUNK = 8 << 20
# While following a part, push its written pages to disk every this many bytes, so the fsync that makes
# the finished file durable has little left to do (with 24 GiB of RAM the kernel would otherwise keep
# gigabytes dirty until that fsync, which then took 0.8 s of a 14.8 s JSONL export).
SYNC_EVERY = 256 << 20


@dataclass(frozen=True)
class ExportedFile:
    format: str
    compression: str
    part: int
    rows: int
    obj: WrittenObject


@dataclass(frozen=True)
class Landed:
    """A finished engine-written file: its path, size and sha256, taken while it was written."""

    path: str
    size: int
    sha256: str


class JsonArrayFramer:
    """JSONEachRow lines -> one JSON array, streaming, whatever the chunk boundaries.

    JSON text never holds a raw newline (it is escaped inside strings), so every `\\n` ends a row.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._rows = False

    def start(self) -> bytes:
        return b"[\n"

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._rows = True
        out = self._pending + chunk.replace(b"\n", b",\n")
        if out.endswith(b",\n"):
            self._pending = b",\n"
            return out[:-2]
        self._pending = b""
        return out

    def end(self) -> bytes:
        return b"\n]\n" if self._rows else b"]\n"


class TextFile:
    """One text object being written: header, JSON framing, compression, then the store's writer.

    When the engine already compressed its output (`engine_compressed`), chunks pass through untouched
    and the header goes in as a compressed member of its own (gzip members and zstd frames concatenate).
    """

    def __init__(self, store: ObjectStore, key: str, fmt: Format, compression: str, header: bytes,
                 expected_size: int | None, engine_compressed: bool = False):
        self.fmt = fmt
        self.compression = effective_compression(fmt, compression)
        self._engine_compressed = engine_compressed
        self._compressor = Compressor("none" if engine_compressed else self.compression)
        self._writer: ObjectWriter = store.writer(key, content_type(fmt, compression), expected_size)
        self._framer = JsonArrayFramer() if fmt.name == "json" else None
        self.counted_rows = 0  # record separators seen, when the bytes are uncompressed JSON lines
        if fmt.name == "csv" and header:
            if engine_compressed:
                member = Compressor(self.compression)
                self._writer.write(member.compress(header) + member.flush())
            else:
                self._put(header)
        elif self._framer:
            self._put(self._framer.start())

    @property
    def counts_own_rows(self) -> bool:
        return self.fmt.name != "csv" and not self._engine_compressed

    @property
    def stored_bytes(self) -> int:
        return self._writer.bytes_written

    def _put(self, data: bytes) -> None:
        out = self._compressor.compress(data)
        if out:
            self._writer.write(out)

    def write_rows(self, chunk: bytes) -> None:
        """A chunk of ClickHouse output (CSV or JSONEachRow, compressed by the engine or not)."""
        if self.counts_own_rows:
            self.counted_rows += chunk.count(b"\n")
        self._put(self._framer.feed(chunk) if self._framer else chunk)

    def commit(self, known_rows: int) -> tuple[WrittenObject, int]:
        """Finish the object; its row count is the one counted in the bytes when possible."""
        if self._framer:
            self._put(self._framer.end())
        tail = self._compressor.flush()
        if tail:
            self._writer.write(tail)
        obj = self._writer.commit()
        return obj, (self.counted_rows if self.counts_own_rows else known_rows)

    def abort(self) -> None:
        self._writer.abort()


class EngineParts:
    """ClickHouse writes each sub-range to a scratch file in a worker thread while the caller ships the
    bytes already written: producing and uploading overlap instead of adding up.

    The worker stays at most `lead` files ahead of the reader, so scratch disk is bounded by a couple of
    sub-ranges, and memory by one read buffer. `write(i, path)` is the engine call for part i.

    `stop` (set by whoever may cancel the export) makes every wait raise `ExportCancelled` within a
    fraction of a second, even while the engine is still computing the first bytes; `close()` then
    leaves the engine's thread to finish on its own (a daemon) instead of waiting for a query whose
    result nobody wants.
    """

    def __init__(self, write: Callable[[int, str], None], count: int, suffix: str, lead: int = 2,
                 scratch_dir: str | None = None, stop: threading.Event | None = None):
        # Paths that do not exist yet: the engine creates each file (TRUNCATE may replace a file that
        # exists, and a reader holding the old one would see nothing), and the reader opens it once it does.
        self._dir = scratch_dir or tempfile.mkdtemp(prefix="exports-parts-", dir=os.environ.get("EXPORTS_SCRATCH_DIR"))
        self._paths = [os.path.join(self._dir, f"part-{i:05d}{suffix}") for i in range(count)]
        self._done = [threading.Event() for _ in range(count)]
        self._slots = threading.Semaphore(lead)
        self._cancelled = threading.Event()
        self._stop = stop or threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(write,), name="engine-parts", daemon=True)
        self._thread.start()

    def _run(self, write: Callable[[int, str], None]) -> None:
        try:
            for i, path in enumerate(self._paths):
                self._slots.acquire()
                if self._cancelled.is_set():
                    return
                write(i, path)
                self._done[i].set()
        except BaseException as exc:  # handed to the reader, which raises it
            self._error = exc
        finally:
            for event in self._done:
                event.set()

    def path(self, i: int) -> str:
        return self._paths[i]

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise ExportCancelled("the export was cancelled while ClickHouse was writing it")

    def wait(self, i: int) -> None:
        """Block until part i is completely written (raising the engine's error, if any)."""
        while not self._done[i].wait(0.05):
            self._check_stop()
        if self._error is not None:
            raise self._error

    def chunks(self, i: int) -> Iterator[bytes]:
        """Part i's bytes as they land in its scratch file."""
        while not os.path.exists(self._paths[i]):
            self._check_stop()
            if self._done[i].wait(0.02):
                if self._error is not None:
                    raise self._error
                break
        with open(self._paths[i], "rb") as fh:
            while True:
                data = fh.read(COPY_CHUNK)
                if data:
                    yield data
                    continue
                if self._done[i].is_set():
                    if self._error is not None:
                        raise self._error
                    data = fh.read(COPY_CHUNK)  # what landed between the last read and the end
                    if not data:
                        return
                    yield data
                    continue
                self._check_stop()
                self._done[i].wait(0.02)

    def follow(self, i: int) -> Landed:
        """Hash part i while the engine writes it and flush its pages to disk along the way: the finished
        file then needs neither a second read nor a long fsync before it is renamed into place."""
        digest, size, synced = hashlib.sha256(), 0, 0
        sync_fd = None
        try:
            for chunk in self.chunks(i):
                digest.update(chunk)
                size += len(chunk)
                if size - synced >= SYNC_EVERY:
                    if sync_fd is None:
                        sync_fd = os.open(self._paths[i], os.O_RDONLY)
                    os.fdatasync(sync_fd)
                    synced = size
        finally:
            if sync_fd is not None:
                os.close(sync_fd)
        return Landed(self._paths[i], size, digest.hexdigest())

    def release(self, i: int) -> None:
        """Part i is shipped: drop its scratch file and let the worker write the next one."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._paths[i])
        self._slots.release()

    def close(self) -> None:
        self._cancelled.set()
        for _ in self._paths:
            self._slots.release()
        if not self._stop.is_set():
            self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)


# ------------------------------------------------------------------------------ engine-written objects
# What every export that lets ClickHouse write its files shares (object storage windows, batch exports):
# the caller says how part i is produced (`write(i, path, clickhouse_format, engine_compression)`) and
# where object n goes (`key(n)`); these functions decide formats, framing, compression, rollover and
# whether a finished local file is simply moved into place.

PartWriter = Callable[[int, str, str, str | None], None]


def scratch_for(store: ObjectStore) -> str | None:
    """Local destinations keep scratch files inside the destination, so finished ones are renamed into
    place instead of copied (the copy was most of the pipeline's own cost)."""
    return store.scratch_dir() if isinstance(store, LocalObjectStore) else None


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise ExportCancelled("the export was cancelled before its file was committed")


def engine_text_files(*, store: ObjectStore, fmt_name: str, compression: str, embedded: bool, counts: list[int],
                      columns: Iterable[str], write: PartWriter, key: Callable[[int], str], expected: int,
                      max_file: int = 0, stop: threading.Event | None = None, scratch_dir: str | None = None,
                      claim: Callable[[str], None] = lambda _key: None) -> list[ExportedFile]:
    """Ship each part's bytes into the current file as ClickHouse writes them; start a new file at a
    part boundary once the current one has reached `max_file` (stored bytes; a file may pass the limit
    by at most one part). One part is one file that ClickHouse writes whole (header included), and on a
    local destination that file is simply moved into place. `counts` are the rows of each part (CSV
    files report them; JSON formats count their own lines when they can). `claim(key)` runs before anything
    is written under a key (event_log records it first); `scratch_dir` is where the engine writes parts
    (a fresh one per call by default)."""
    fmt = get_format(fmt_name)
    compression = effective_compression(fmt, compression)
    # chDB gzips CSV/JSONL itself, off the GIL; each part becomes one gzip member, and multi-member
    # gzip is standard (RFC 1952) and read everywhere. zstd is compressed here into one frame per file,
    # because common readers stop after a first zstd frame; JSON arrays are framed here, so compressed here.
    engine_compressed = embedded and compression == "gzip" and fmt_name != "json"
    single = len(counts) == 1
    ch_format = "CSVWithNames" if single and fmt_name == "csv" else fmt.clickhouse_format
    adopt = (single and isinstance(store, LocalObjectStore) and fmt_name != "json"
             and (compression == "none" or engine_compressed))
    header = b"" if ch_format == "CSVWithNames" else csv_header(columns)
    expected = min(expected, max_file) if max_file else expected
    engine_compression = compression if engine_compressed else None
    out: list[ExportedFile] = []
    current: TextFile | None = None
    known_rows = 0
    parts = EngineParts(lambda i, path: write(i, path, ch_format, engine_compression),
                        len(counts), ".part",  # no ".gz": the engine would compress by extension
                        scratch_dir=scratch_dir or scratch_for(store), stop=stop)
    try:
        if adopt:
            landed = parts.follow(0)
            parts.wait(0)
            _check(stop)
            claim(key(0))
            obj = store.adopt(key(0), landed.path, content_type(fmt, compression),  # type: ignore[attr-defined]
                              sha256=landed.sha256, size=landed.size)
            return [ExportedFile(fmt_name, compression, 0, counts[0], obj)]
        for i, count in enumerate(counts):
            if current is None:
                claim(key(len(out)))
                current = TextFile(store, key(len(out)), fmt, compression, header, expected or None,
                                   engine_compressed)
                known_rows = 0
            for chunk in parts.chunks(i):
                current.write_rows(chunk)
            parts.release(i)
            known_rows += count
            if max_file and current.stored_bytes >= max_file:
                _check(stop)
                obj, rows = current.commit(known_rows)
                out.append(ExportedFile(fmt_name, compression, len(out), rows, obj))
                current = None
        if current is not None:
            _check(stop)
            obj, rows = current.commit(known_rows)
            out.append(ExportedFile(fmt_name, compression, len(out), rows, obj))
            current = None
    finally:
        if current is not None:
            current.abort()
        parts.close()
    return out


def engine_parquet_files(*, store: ObjectStore, count: int, write: PartWriter, key: Callable[[int], str],
                         expected: int, stop: threading.Event | None = None, scratch_dir: str | None = None,
                         claim: Callable[[str], None] = lambda _key: None) -> list[ExportedFile]:
    """One Parquet file per part, written by ClickHouse (bounded row groups) and shipped as it is written
    (moved into place on a local destination). Parquet files cannot be concatenated, so parts are its
    file boundaries. `expected` (a text-size estimate of all parts) bounds each part's size from above,
    which is what multipart sizing needs (never too few parts' worth of capacity)."""
    fmt = get_format("parquet")
    ctype = content_type(fmt, "none")
    parts = EngineParts(lambda i, path: write(i, path, "Parquet", None), count, ".parquet",
                        scratch_dir=scratch_dir or scratch_for(store), stop=stop)
    out: list[ExportedFile] = []
    try:
        for i in range(count):
            claim(key(len(out)))
            if isinstance(store, LocalObjectStore):
                landed = parts.follow(i)
                parts.wait(i)
                rows = parquet_rows(landed.path)
                _check(stop)
                obj = store.adopt(key(len(out)), landed.path, ctype, sha256=landed.sha256, size=landed.size)
            else:
                with store.writer(key(len(out)), ctype, max(1, expected // max(count, 1))) as writer:
                    for chunk in parts.chunks(i):
                        writer.write(chunk)
                    parts.wait(i)
                    rows = parquet_rows(parts.path(i))
                    _check(stop)
                    obj = writer.commit()
            parts.release(i)
            out.append(ExportedFile("parquet", "none", len(out), rows, obj))
    finally:
        parts.close()
    return out


def csv_header(columns: Iterable[str]) -> bytes:
    """The header line exactly as ClickHouse's CSVWithNames writes it (names quoted), so a file reads the
    same whether ClickHouse or we wrote its header."""
    return (",".join('"' + c.replace('"', '""') + '"' for c in columns) + "\r\n").encode()


def parquet_rows(path: str) -> int:
    return pq.read_metadata(path).num_rows
