"""LocalObjectStore on the real filesystem: atomic publish, clean aborts, the same contract as S3."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time

import pytest

from exports_pipeline.errors import ConfigError, CustomerFault, ExportsError, ObjectNotFound
from exports_pipeline.resources.object_store import Destination, LocalObjectStore
from exports_pipeline.resources.object_store.local import TEMP_NAME


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(Destination.from_url(tmp_path.as_uri() + "/"))


def test_temp_file_is_invisible_until_commit_then_replaced_atomically(store, tmp_path):
    key = "proj/observations/2026-07-01T00-00-00.jsonl"
    final = tmp_path / key
    with store.writer(key, "application/x-ndjson") as writer:
        writer.write(b'{"a":1}\n')
        writer.write(bytearray(b'{"a":2}\n'))
        temp = writer.temp_path
        assert os.path.dirname(temp) == str(final.parent)
        assert TEMP_NAME.match(os.path.basename(temp))
        assert os.path.exists(temp) and not final.exists()
        assert store.list_keys("") == [] and not store.exists(key)
        inode = os.stat(temp).st_ino
        written = writer.commit()
    assert not os.path.exists(temp)
    assert os.stat(final).st_ino == inode  # renamed into place, not copied
    assert final.read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert written.size == 16 and written.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    assert written.uri == final.as_uri() and written.etag is None
    assert store.get_bytes(key) == final.read_bytes()


def test_abort_and_exceptions_remove_the_temp_file(store, tmp_path):
    writer = store.writer("a/b.csv", "text/csv")
    writer.write(b"x,y\n")
    temp = writer.temp_path
    writer.abort()
    writer.abort()  # idempotent
    assert not os.path.exists(temp) and not (tmp_path / "a/b.csv").exists()
    with pytest.raises(ValueError, match="already aborted"):
        writer.write(b"more")
    with pytest.raises(KeyError):
        with store.writer("a/c.csv") as writer:
            writer.write(b"partial")
            temp = writer.temp_path
            raise KeyError("boom")
    assert not os.path.exists(temp) and not (tmp_path / "a/c.csv").exists()
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


def test_recommit_overwrites_and_readers_never_see_a_mix(store, tmp_path):
    key = "m/manifest.json"
    store.put_bytes(key, b"old version", "application/json")
    with store.writer(key) as writer:
        writer.write(b"new")
        assert store.get_bytes(key) == b"old version"  # the old object stays whole until commit
        writer.commit()
    assert store.get_bytes(key) == b"new"
    with store.open_read(key) as stream:
        assert stream.read() == b"new"


def test_list_exists_delete_and_presign(store, tmp_path):
    keys = [f"p/{i:04d}.csv" for i in range(50)] + ["q/other.csv"]
    for key in keys:
        store.put_bytes(key, key.encode())
    with store.writer("p/9999.csv") as pending:  # in progress: not listed
        pending.write(b"...")
        assert store.list_keys("p/") == keys[:-1]
        pending.abort()
    assert store.list_keys("p/000") == [f"p/000{i}.csv" for i in range(10)]
    assert store.list_keys("") == sorted(keys)
    assert store.list_keys("nowhere/") == []
    assert store.exists("q/other.csv") and not store.exists("q/none.csv")
    store.delete_keys(keys[:50] + ["p/missing.csv"])
    assert store.list_keys("") == ["q/other.csv"]
    assert store.presign_get("q/other.csv", 60, filename="x.csv") == (tmp_path / "q/other.csv").as_uri()
    with pytest.raises(ObjectNotFound):
        store.get_bytes("p/0001.csv")


def test_keys_cannot_escape_the_directory(store):
    for bad in ("../escape", "a/../../b", "/abs", "a//b", "./a", ""):
        with pytest.raises(ConfigError):
            store.writer(bad)
    with pytest.raises(ConfigError):
        store.list_keys("../")


def test_missing_directory_is_the_customers_fault(tmp_path):
    store = LocalObjectStore(Destination.from_url((tmp_path / "not-there").as_uri() + "/"))
    with pytest.raises(CustomerFault) as error:
        store.validate()
    assert error.value.code == "NoSuchDirectory"
    assert not (tmp_path / "not-there").exists()  # not silently created
    with pytest.raises(CustomerFault):
        store.list_keys("")
    with pytest.raises(CustomerFault):
        store.get_bytes("k")


def _as_unprivileged(fn) -> str:
    """``fn()``'s string result, computed with permission checks in force: root ignores permission
    bits, so as root it runs in a forked child that first becomes ``nobody``."""
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only already-imported code runs here
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, fn().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("unprivileged child hung")
        time.sleep(0.01)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode()


def test_permission_denied_is_the_customers_fault():
    root = tempfile.mkdtemp(prefix="exports-readonly-")  # in /tmp, so nobody can reach it
    os.chmod(root, 0o555)
    store = LocalObjectStore(Destination.from_url(f"file://{root}/"))

    def attempt() -> str:
        try:
            store.put_bytes("proj/file.csv", b"x")
        except ExportsError as exc:
            return f"{type(exc).__name__} {exc.code}"
        return "no error"

    try:
        assert _as_unprivileged(attempt) == "CustomerFault EACCES"
        assert os.listdir(root) == []
    finally:
        os.chmod(root, 0o755)
        shutil.rmtree(root)


def test_a_file_where_a_directory_is_needed_is_the_customers_fault(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    (root / "taken").write_bytes(b"a file where a directory is needed")
    store = LocalObjectStore(Destination.from_url(root.as_uri() + "/"))
    with pytest.raises(CustomerFault, match="collides") as error:
        store.put_bytes("taken/key.csv", b"x")
    assert error.value.code in ("EEXIST", "ENOTDIR")
    assert (root / "taken").read_bytes() == b"a file where a directory is needed"


def test_validate_on_a_directory(store, tmp_path):
    result = store.validate()
    assert result.ok and result.uri == tmp_path.as_uri() + "/"
    assert list(tmp_path.iterdir()) == []


def test_adopt_renames_a_scratch_file_into_place_and_hashes_it(store, tmp_path):
    scratch = store.scratch_dir()
    source = os.path.join(scratch, "part-00000.part")
    with open(source, "wb") as fh:
        fh.write(b"a,b\r\n1,2\r\n")
    inode = os.stat(source).st_ino
    assert store.list_keys("") == []  # scratch is never a key
    written = store.adopt("p/events/x.csv", source, "text/csv")
    final = tmp_path / "p/events/x.csv"
    assert os.stat(final).st_ino == inode and not os.path.exists(source)
    assert written.sha256 == hashlib.sha256(b"a,b\r\n1,2\r\n").hexdigest() and written.size == 10


def test_adopt_refuses_a_file_that_is_not_the_size_hashed_while_it_was_written(store, tmp_path):
    source = os.path.join(store.scratch_dir(), "part-00000.part")
    with open(source, "wb") as fh:
        fh.write(b"0123456789")
    with pytest.raises(ExportsError, match="10 bytes, not the 9 hashed"):
        store.adopt("p/x.csv", source, "text/csv", sha256="0" * 64, size=9)
    assert not (tmp_path / "p/x.csv").exists() and store.list_keys("") == []
