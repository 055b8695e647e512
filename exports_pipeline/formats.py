"""Export formats and compressions: file extension, content type, and the ClickHouse format behind each.

ClickHouse produces every byte of the text formats and Parquet; the pipeline only frames (a CSV
header, a JSON array's brackets) and compresses. The rendering rules are in README.md ("Rendering").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import zstandard


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    content_type: str
    clickhouse_format: str
    text: bool


FORMATS: dict[str, Format] = {
    "csv": Format("csv", "csv", "text/csv; charset=utf-8", "CSV", True),
    "json": Format("json", "json", "application/json; charset=utf-8", "JSONEachRow", True),
    "jsonl": Format("jsonl", "jsonl", "application/x-ndjson; charset=utf-8", "JSONEachRow", True),
    "parquet": Format("parquet", "parquet", "application/vnd.apache.parquet", "Parquet", False),
}

COMPRESSIONS = ("none", "gzip", "zstd")
_COMPRESSED = {"gzip": ("gz", "application/gzip"), "zstd": ("zst", "application/zstd")}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; expected one of {sorted(FORMATS)}") from None


def effective_compression(fmt: Format, compression: str) -> str:
    """Parquet compresses its own pages (zstd), so file-level compression applies to text formats only."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; expected one of {list(COMPRESSIONS)}")
    return compression if fmt.text else "none"


def file_extension(fmt: Format, compression: str) -> str:
    comp = effective_compression(fmt, compression)
    return fmt.extension if comp == "none" else f"{fmt.extension}.{_COMPRESSED[comp][0]}"


def content_type(fmt: Format, compression: str) -> str:
    comp = effective_compression(fmt, compression)
    return fmt.content_type if comp == "none" else _COMPRESSED[comp][1]


class Compressor:
    """A streaming compressor with one interface for none/gzip/zstd."""

    def __init__(self, compression: str, level: int | None = None):
        self.compression = compression
        if compression == "gzip":
            self._obj = zlib.compressobj(level if level is not None else 6, zlib.DEFLATED, 31)
        elif compression == "zstd":
            self._obj = zstandard.ZstdCompressor(level=level if level is not None else 3).compressobj()
        elif compression == "none":
            self._obj = None
        else:
            raise ValueError(f"unknown compression {compression!r}")

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data) if self._obj is not None else data

    def flush(self) -> bytes:
        return self._obj.flush() if self._obj is not None else b""
