"""From ClickHouse bytes to committed objects: framing, compression, rollover, counting.

Python never touches a row on these paths: it frames (a CSV header, a JSON array's brackets and
commas), counts record separators with `bytes.count`, compresses and hands bytes to the store.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow.parquet as pq

from exports_pipeline.formats import Compressor, Format, content_type, effective_compression
from exports_pipeline.resources.object_store.base import ObjectStore, ObjectWriter, WrittenObject

COPY_CHUNK = 8 << 20


@dataclass(frozen=True)
class ExportedFile:
    format: str
    compression: str
    part: int
    rows: int
    obj: WrittenObject


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
    """One text object being written: header/framing, compression, and the uncompressed size."""

    def __init__(self, store: ObjectStore, key: str, fmt: Format, compression: str, header: bytes,
                 expected_size: int | None):
        self.fmt = fmt
        self.compression = effective_compression(fmt, compression)
        self._compressor = Compressor(self.compression)
        self._writer: ObjectWriter = store.writer(key, content_type(fmt, compression), expected_size)
        self._framer = JsonArrayFramer() if fmt.name == "json" else None
        self.raw_bytes = 0
        self.rows = 0
        self._put(header if fmt.name == "csv" else (self._framer.start() if self._framer else b""))

    def _put(self, data: bytes) -> None:
        if data:
            self.raw_bytes += len(data)
            out = self._compressor.compress(data)
            if out:
                self._writer.write(out)

    def write_rows(self, chunk: bytes) -> None:
        """A chunk of ClickHouse output (CSV or JSONEachRow)."""
        if self.fmt.name != "csv":
            self.rows += chunk.count(b"\n")
        self._put(self._framer.feed(chunk) if self._framer else chunk)

    def commit(self, csv_rows: int | None = None) -> tuple[WrittenObject, int]:
        if self._framer:
            self._put(self._framer.end())
        tail = self._compressor.flush()
        if tail:
            self._writer.write(tail)
        obj = self._writer.commit()
        return obj, (csv_rows if self.fmt.name == "csv" else self.rows)

    def abort(self) -> None:
        self._writer.abort()


def csv_header(columns: Iterable[str]) -> bytes:
    return (",".join(columns) + "\r\n").encode()


def parquet_rows(path: str) -> int:
    return pq.read_metadata(path).num_rows


def upload_file(store: ObjectStore, key: str, path: str, ctype: str) -> WrittenObject:
    """Copy a finished local file into the store through a writer (multipart on S3, atomic rename locally)."""
    with store.writer(key, ctype, os.path.getsize(path)) as writer:
        with open(path, "rb") as fh:
            while block := fh.read(COPY_CHUNK):
                writer.write(block)
        return writer.commit()


def scratch_file(suffix: str) -> str:
    """A private temporary file path for the engine to write (chDB's INTO OUTFILE) and us to read."""
    fd, path = tempfile.mkstemp(prefix="exports-", suffix=suffix, dir=os.environ.get("EXPORTS_SCRATCH_DIR"))
    os.close(fd)
    return path
