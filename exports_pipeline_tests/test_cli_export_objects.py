"""`exports-pipeline export-objects delete` in process: real files, moto's S3 and a real SQLite state database."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from exports_pipeline.cli import main
from exports_pipeline.commands import open_state
from exports_pipeline.settings import get_settings
from exports_pipeline.state.models import EventLogEntry
from exports_pipeline.state.store import StateStore

KEY = "7a" * 32
SECRET = "cli-export-objects-secret/xyz"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENCRYPTION_KEY", KEY)
    for name in ("EXPORTS_DATABASE_URL", "EXPORTS_CLICKHOUSE_URL", "EXPORTS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    StateStore(database_url=get_settings().database_url).dispose()
    get_settings.cache_clear()


@pytest.fixture
def state(env) -> StateStore:
    return open_state(get_settings())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def s3_keys(endpoint: str, bucket: str) -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def local_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def log_rows(state: StateStore, bucket: str, project: str, keys: list[str], endpoint: str = "") -> None:
    state.upsert_event_log([
        EventLogEntry(bucket_name=bucket, bucket_path=key, project_id=project,
                      entity_type="blob_storage_export_daily", entity_id=f"2025-01-0{i % 9 + 1}|{project}",
                      event_id=f"{project}-{i}", endpoint=endpoint)
        for i, key in enumerate(keys)
    ])


def write_local(root: Path, keys: list[str]) -> None:
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"data of {key}\n")


def put_s3(endpoint: str, bucket: str, keys: list[str]) -> None:
    client = s3_client(endpoint)
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=f"data of {key}".encode())


@pytest.fixture
def world(tmp_path: Path, state: StateStore, moto_endpoint: str, s3_bucket: str, monkeypatch, capsys):
    """Project `mine` exported to a local directory (an old destination) and to S3 (its current one);
    project `theirs` exported next to it in both places."""
    local = tmp_path / "exports"
    mine_local = ["mine/events/daily/2025-01-01/part-00000.jsonl", "mine/events/daily/2025-01-01/manifest.json",
                  "mine/events/daily/2025-01-02/part-00000.jsonl"]
    theirs_local = ["theirs/events/daily/2025-01-01/part-00000.jsonl"]
    mine_s3 = [f"pre/mine/events/hourly/2025-01-01T0{h}/part-00000.csv" for h in range(3)]
    theirs_s3 = ["pre/theirs/events/hourly/2025-01-01T00/part-00000.csv"]
    write_local(local, mine_local + theirs_local)
    put_s3(moto_endpoint, s3_bucket, mine_s3 + theirs_s3)
    log_rows(state, str(local), "mine", mine_local)
    log_rows(state, s3_bucket, "mine", mine_s3, moto_endpoint)
    log_rows(state, str(local), "theirs", theirs_local)
    log_rows(state, s3_bucket, "theirs", theirs_s3, moto_endpoint)

    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    code, _, err = run(capsys, "integrations", "add-blob", "--project", "mine", "--destination",
                       f"s3://{s3_bucket}/pre/", "--frequency", "hourly", "--format", "csv", "--mode",
                       "full_history", "--endpoint", moto_endpoint, "--force-path-style",
                       "--access-key-id", "testing")
    assert code == 0, err
    monkeypatch.delenv("EXPORTS_SECRET_ACCESS_KEY")
    return {"local": local, "mine_local": mine_local, "theirs_local": theirs_local, "mine_s3": mine_s3,
            "theirs_s3": theirs_s3, "bucket": s3_bucket, "endpoint": moto_endpoint}


def test_dry_run_lists_and_deletes_nothing(world, state: StateStore, capsys):
    code, out, err = run(capsys, "export-objects", "delete", "--project", "mine")
    assert (code, err) == (0, "")
    for key in world["mine_local"]:
        assert (world["local"] / key).as_uri() in out
    for key in world["mine_s3"]:
        assert f"s3://{world['bucket']}/{key}" in out
    assert "theirs" not in out
    assert "dry run: would delete 6 object(s) in 2 location(s)" in out and "--yes" in out
    assert local_files(world["local"]) == sorted(world["mine_local"] + world["theirs_local"])
    assert s3_keys(world["endpoint"], world["bucket"]) == sorted(world["mine_s3"] + world["theirs_s3"])
    assert len(state.list_event_log("mine")) == 6 and len(state.list_event_log("theirs")) == 2
    assert SECRET not in out + err


def test_yes_deletes_objects_then_rows_of_that_project_only(world, state: StateStore, capsys):
    code, out, err = run(capsys, "export-objects", "delete", "--project", "mine", "--yes")
    assert (code, err) == (0, "")
    assert "deleted 6 object(s) and 6 event_log row(s) for project mine" in out
    assert local_files(world["local"]) == world["theirs_local"]
    assert not (world["local"] / "mine").exists()  # emptied folders are pruned, the root is kept
    assert world["local"].is_dir()
    assert s3_keys(world["endpoint"], world["bucket"]) == world["theirs_s3"]
    assert state.list_event_log("mine") == []
    theirs = sorted(e.bucket_path for e in state.list_event_log("theirs"))
    assert theirs == sorted(world["theirs_local"] + world["theirs_s3"])
    assert SECRET not in out + err

    code, out, _ = run(capsys, "export-objects", "delete", "--project", "mine", "--yes")
    assert code == 0 and "no exported objects are recorded for project mine" in out


def test_s3_rows_without_integration_are_refused_and_kept(world, state: StateStore, capsys):
    assert run(capsys, "integrations", "remove", "--project", "mine")[0] == 0
    code, out, err = run(capsys, "export-objects", "delete", "--project", "mine", "--yes")
    assert code == 1
    assert f"s3://{world['bucket']}" in err and "no object-storage integration" in err and "kept" in err
    # The local directory needs no credentials: those objects and rows are gone.
    assert local_files(world["local"]) == world["theirs_local"]
    assert s3_keys(world["endpoint"], world["bucket"]) == sorted(world["mine_s3"] + world["theirs_s3"])
    remaining = state.list_event_log("mine")
    assert sorted(e.bucket_path for e in remaining) == sorted(world["mine_s3"])
    assert {e.bucket_name for e in remaining} == {world["bucket"]}
    assert "3 row(s) kept" in out


def test_missing_local_directory_keeps_rows(tmp_path: Path, state: StateStore, capsys):
    gone = tmp_path / "unmounted"
    log_rows(state, str(gone), "p", ["p/a.jsonl"])
    code, out, err = run(capsys, "export-objects", "delete", "--project", "p", "--yes")
    assert code == 1 and "does not exist" in err
    assert len(state.list_event_log("p")) == 1


def test_delete_failure_keeps_rows(tmp_path: Path, state: StateStore, capsys):
    root = tmp_path / "root"
    write_local(root, ["p/ok.jsonl"])
    (root / "p" / "dir.jsonl").mkdir()  # unlink of a directory fails: the object cannot be deleted
    log_rows(state, str(root), "p", ["p/ok.jsonl", "p/dir.jsonl"])
    code, out, err = run(capsys, "export-objects", "delete", "--project", "p", "--yes")
    assert code == 1 and "failed" in err
    assert len(state.list_event_log("p")) == 2  # one delete call per chunk: nothing confirmed, nothing forgotten


def test_unknown_project_and_bad_project(state: StateStore, capsys):
    code, out, _ = run(capsys, "export-objects", "delete", "--project", "nobody")
    assert code == 0 and "no exported objects are recorded for project nobody" in out
    code, out, err = run(capsys, "export-objects", "delete", "--project", "")
    assert code == 2 and err.startswith("exports-pipeline: --project")
