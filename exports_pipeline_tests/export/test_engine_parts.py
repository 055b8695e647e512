"""EngineParts: a writer thread produces files while the reader follows them (the engine's side is a plain
function here, writing the way INTO OUTFILE does: create, then append in blocks)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from exports_pipeline import files
from exports_pipeline.files import EngineParts

BLOCK = os.urandom(1 << 16)


def slow_writer(blocks: int, fail_at: int | None = None):
    def write(i: int, path: str) -> None:
        with open(path, "wb") as fh:
            for n in range(blocks):
                if n == fail_at:
                    raise RuntimeError(f"engine died in part {i}")
                fh.write(BLOCK)
                fh.flush()
                time.sleep(0.002)
    return write


def test_follow_hashes_each_part_while_it_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "SYNC_EVERY", 1 << 18)  # flush along the way several times
    os.makedirs(tmp_path / "scratch")
    parts = EngineParts(slow_writer(40), 2, ".part", scratch_dir=str(tmp_path / "scratch"))
    try:
        for i in range(2):
            landed = parts.follow(i)
            parts.wait(i)
            data = open(landed.path, "rb").read()
            assert landed.size == len(data) == 40 * len(BLOCK)
            assert landed.sha256 == hashlib.sha256(data).hexdigest()
            parts.release(i)
            assert not os.path.exists(landed.path)
    finally:
        parts.close()
    assert not (tmp_path / "scratch").exists()


def test_follow_raises_the_engine_error_instead_of_returning_a_short_file(tmp_path):
    parts = EngineParts(slow_writer(20, fail_at=7), 1, ".part")
    try:
        with pytest.raises(RuntimeError, match="engine died in part 0"):
            parts.follow(0)
    finally:
        parts.close()


def test_a_stop_ends_every_wait_at_once_and_close_does_not_wait_for_the_engine(tmp_path):
    import threading

    from exports_pipeline.errors import ExportCancelled

    release = threading.Event()

    def thinking_engine(i: int, path: str) -> None:  # a query still sorting: no byte for a long time
        release.wait(30)

    stop = threading.Event()
    parts = EngineParts(thinking_engine, 1, ".part", stop=stop)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ExportCancelled):
        for _chunk in parts.chunks(0):
            raise AssertionError("no bytes were written")
    with pytest.raises(ExportCancelled):
        parts.wait(0)
    parts.close()
    assert time.monotonic() - started < 2, "neither the waits nor close() waited for the engine"
    release.set()
