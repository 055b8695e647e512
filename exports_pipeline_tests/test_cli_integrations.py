"""`exports-pipeline integrations ...` in process, against a real SQLite state database and moto's S3."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import pytest

from exports_pipeline.crypto import SecretBox
from exports_pipeline.settings import get_settings
from exports_pipeline.state.models import blob_cursor_sink
from exports_pipeline_tests.cli_harness import Cli, cli_in

KEY = "5e" * 32
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY-cli-test-secret"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    with cli_in(tmp_path, monkeypatch, capsys, key=KEY,
                unset=("EXPORTS_CLICKHOUSE_URL", "EXPORTS_SECRET_ACCESS_KEY")) as runner:
        yield runner


def today() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def add_local(cli: Cli, project: str, directory: Path, *extra: str) -> tuple[int, str, str]:
    return cli("integrations", "add-blob", "--project", project, "--destination", directory.as_uri() + "/",
               "--frequency", "daily", "--format", "jsonl", "--mode", "full_history", *extra)


def add_s3(cli: Cli, project: str, bucket: str, endpoint: str, *extra: str) -> tuple[int, str, str]:
    return cli("integrations", "add-blob", "--project", project, "--destination", f"s3://{bucket}/exports/",
               "--frequency", "hourly", "--format", "csv", "--format", "parquet", "--compression", "gzip",
               "--mode", "from_custom_date", "--start-date", "2025-02-03", "--endpoint", endpoint,
               "--force-path-style", "--access-key-id", "AKIATESTCLI", *extra)


# ----------------------------------------------------------------------------------------------- add-blob


def test_add_local_round_trip_creates_directory(cli: Cli, tmp_path: Path):
    directory = tmp_path / "exports" / "deep"
    code, out, err = cli("integrations", "add-blob", "--project", "proj-local", "--destination",
                         directory.as_uri() + "/", "--frequency", "daily", "--format", "jsonl", "--format",
                         "parquet", "--compression", "zstd", "--mode", "from_today", "--max-file-size-mb", "64",
                         "--key-template", "{prefix}{project_id}/{frequency}/{window_start}/part-{part}.{ext}")
    assert (code, err) == (0, "")
    assert directory.is_dir() and f"created directory {directory}" in out
    saved = cli.state.get_blob_integration("proj-local")
    assert saved is not None
    assert (saved.type, saved.bucket_name, saved.prefix) == ("LOCAL", str(directory), "")
    assert saved.export_frequency == "daily" and saved.file_types == ("jsonl", "parquet")
    assert saved.compression == "zstd" and saved.max_file_size_mb == 64
    assert saved.key_template == "{prefix}{project_id}/{frequency}/{window_start}/part-{part}.{ext}"
    assert saved.export_mode == "FROM_TODAY" and saved.export_start_date == today()
    assert saved.access_key_id is None and saved.secret_access_key is None and saved.enabled


def test_add_s3_round_trip_stores_secret_encrypted(cli: Cli, monkeypatch, moto_endpoint: str):
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    code, out, err = add_s3(cli, "proj-s3", "my-bucket", moto_endpoint + "/", "--region", "eu-west-1",
                            "--sse", "aws:kms", "--sse-kms-key-id", "kms-key-1")
    assert (code, err) == (0, ""), err
    saved = cli.state.get_blob_integration("proj-s3")
    assert saved is not None
    assert (saved.type, saved.bucket_name, saved.prefix) == ("S3_COMPATIBLE", "my-bucket", "exports/")
    assert saved.endpoint == moto_endpoint  # normalized: no trailing slash
    assert (saved.region, saved.force_path_style, saved.access_key_id) == ("eu-west-1", True, "AKIATESTCLI")
    assert (saved.sse, saved.sse_kms_key_id) == ("aws:kms", "kms-key-1")
    assert saved.file_types == ("csv", "parquet") and saved.compression == "gzip"
    assert saved.export_mode == "FROM_CUSTOM_DATE"
    assert saved.export_start_date == dt.datetime(2025, 2, 3, tzinfo=dt.UTC)
    assert saved.secret_access_key != SECRET and SECRET not in saved.secret_access_key
    assert SecretBox(KEY).decrypt(saved.secret_access_key) == SECRET
    assert SECRET not in out and saved.secret_access_key not in out

    code, out, _ = cli("integrations", "list")
    assert code == 0 and "proj-s3" in out and "AKIATESTCLI" in out and "****" in out
    code, out, _ = cli("integrations", "list", "--json")
    rows = json.loads(out)
    assert rows == [{**rows[0], "project": "proj-s3", "kind": "blob", "secret": "****",
                     "destination": "s3://my-bucket/exports/", "formats": ["csv", "parquet"]}]
    assert SECRET not in cli.transcript and saved.secret_access_key not in cli.transcript


def test_add_s3_without_endpoint_is_type_s3(cli: Cli):
    code, _, err = cli("integrations", "add-blob", "--project", "aws", "--destination", "s3://aws-bucket",
                       "--frequency", "weekly", "--format", "json", "--mode", "full_history")
    assert (code, err) == (0, "")
    saved = cli.state.get_blob_integration("aws")
    assert (saved.type, saved.prefix, saved.endpoint, saved.region) == ("S3", "", None, "auto")
    assert saved.export_start_date is None and saved.secret_access_key is None


def test_secret_from_stdin(cli: Cli, monkeypatch, moto_endpoint: str):
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\nsecond line ignored\n"))
    code, out, err = add_s3(cli, "stdin-proj", "b-stdin", moto_endpoint, "--secret-access-key-stdin")
    assert (code, err) == (0, "")
    saved = cli.state.get_blob_integration("stdin-proj")
    assert SecretBox(KEY).decrypt(saved.secret_access_key) == SECRET
    assert SECRET not in cli.transcript


def test_secret_given_twice_or_empty_is_refused(cli: Cli, monkeypatch, moto_endpoint: str):
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setattr("sys.stdin", io.StringIO("other\n"))
    code, _, err = add_s3(cli, "twice", "b-twice", moto_endpoint, "--secret-access-key-stdin")
    assert code == 2 and "--secret-access-key-stdin" in err and "EXPORTS_SECRET_ACCESS_KEY" in err
    monkeypatch.delenv("EXPORTS_SECRET_ACCESS_KEY")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = add_s3(cli, "empty", "b-empty", moto_endpoint, "--secret-access-key-stdin")
    assert code == 2 and "--secret-access-key-stdin" in err
    assert cli.state.list_blob_integrations() == []
    assert SECRET not in cli.transcript


def test_access_key_without_secret_and_secret_without_key_are_refused(cli: Cli, monkeypatch, moto_endpoint):
    code, _, err = add_s3(cli, "nokey", "b-nokey", moto_endpoint)
    assert code == 2 and "--access-key-id" in err and "EXPORTS_SECRET_ACCESS_KEY" in err
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    code, _, err = cli("integrations", "add-blob", "--project", "noid", "--destination", "s3://b-noid/",
                       "--frequency", "daily", "--format", "csv", "--mode", "full_history")
    assert code == 2 and "--access-key-id" in err
    assert cli.state.list_blob_integrations() == [] and SECRET not in cli.transcript


def test_missing_encryption_key_names_it(cli: Cli, monkeypatch, moto_endpoint: str):
    monkeypatch.delenv("ENCRYPTION_KEY")
    get_settings.cache_clear()
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    code, out, err = add_s3(cli, "nokey-proj", "b-x", moto_endpoint)
    assert code == 2 and err.startswith("exports-pipeline: ") and "ENCRYPTION_KEY" in err
    assert cli.state.get_blob_integration("nokey-proj") is None and SECRET not in cli.transcript


def test_existing_integration_is_refused_pointing_to_update(cli: Cli, tmp_path: Path):
    assert add_local(cli, "dup", tmp_path / "d1")[0] == 0
    code, _, err = add_local(cli, "dup", tmp_path / "d2")
    assert code == 2 and "already has" in err and "integrations update --project dup" in err
    assert cli.state.get_blob_integration("dup").bucket_name == str(tmp_path / "d1")


@pytest.mark.parametrize("project", ["a|b", "has space", "x,y", ""])
def test_invalid_project_ids_are_refused(cli: Cli, tmp_path: Path, project: str):
    code, out, err = add_local(cli, project, tmp_path / "d")
    assert code == 2 and out == ""
    assert err.startswith("exports-pipeline: --project") and err.count("\n") == 1
    if project:
        assert repr(project) in err
    assert cli.state.list_blob_integrations() == []


@pytest.mark.parametrize(("args", "flag"), [
    (["--format", "xml"], "--format"),
    (["--format", "csv", "--format", "csv"], "--format"),
    (["--compression", "brotli"], "--compression"),
    (["--frequency", "monthly"], "--frequency"),
    (["--mode", "sometimes"], "--mode"),
    (["--mode", "full_history", "--start-date", "2025-01-01"], "--start-date"),
    (["--mode", "from_today", "--start-date", "2025-01-01"], "--start-date"),
    (["--mode", "from_custom_date"], "--start-date"),
    (["--mode", "from_custom_date", "--start-date", "2025-13-01"], "--start-date"),
    (["--mode", "from_custom_date", "--start-date", "yesterday"], "--start-date"),
    (["--mode", "from_custom_date", "--start-date", "2999-01-01"], "--start-date"),
    (["--key-template", "{prefix}{project_id}/fixed.{ext}"], "--key-template"),
    (["--key-template", "{prefix}{nope}{project_id}{window_start}{part}.{ext}"], "--key-template"),
    (["--key-template", "{project_id}/{window_start}/{part}.{ext}"], "--key-template"),
    (["--max-file-size-mb", "-5"], "--max-file-size-mb"),
    (["--sse", "rot13"], "--sse"),
])
def test_invalid_options_are_refused_naming_the_flag(cli: Cli, tmp_path: Path, args: list[str], flag: str):
    base = {"--frequency": "daily", "--format": None, "--mode": "full_history"}
    argv = ["integrations", "add-blob", "--project", "p", "--destination", "s3://bucket-x/"]
    for name, value in base.items():
        if name not in args:
            argv += [name, value or "csv"]
    code, out, err = cli(*argv, *args)
    assert code == 2 and out == "", err
    assert err.startswith(f"exports-pipeline: {flag}") and err.count("\n") == 1, err
    assert cli.state.list_blob_integrations() == []


@pytest.mark.parametrize(("destination", "extra", "flag"), [
    ("s3://bucket/prefix-without-slash", [], "--destination"),
    ("s3://b/", [], "--destination"),
    ("s3://user:pw@bucket/", [], "--destination"),
    ("ftp://host/dir/", [], "--destination"),
    ("file://relative/dir/", [], "--destination"),
    ("s3://bucket/", ["--endpoint", "ftp://minio:9000"], "--endpoint"),
    ("s3://bucket/", ["--endpoint", "http://key:pw@minio:9000"], "--endpoint"),
    ("s3://bucket/", ["--endpoint", "http://minio:notaport"], "--endpoint"),
    ("s3://bucket/", ["--region", "eu west"], "--region"),
    ("s3://bucket/", ["--sse-kms-key-id", "k"], "--sse-kms-key-id"),
    ("FILE", ["--endpoint", "http://minio:9000"], "--endpoint"),
    ("FILE", ["--region", "eu-west-1"], "--region"),
])
def test_invalid_destinations_are_refused(cli: Cli, tmp_path: Path, destination: str, extra: list[str], flag: str):
    if destination == "FILE":
        destination = (tmp_path / "never-created").as_uri() + "/"
    code, out, err = cli("integrations", "add-blob", "--project", "p", "--destination", destination,
                         "--frequency", "daily", "--format", "csv", "--mode", "full_history", *extra)
    assert code == 2 and out == "" and err.startswith(f"exports-pipeline: {flag}"), err
    assert ":pw@" not in err
    assert cli.state.list_blob_integrations() == []
    assert not (tmp_path / "never-created").exists()


def test_credentials_in_endpoint_are_not_echoed(cli: Cli):
    code, _, err = cli("integrations", "add-blob", "--project", "p", "--destination", "s3://bucket/",
                       "--frequency", "daily", "--format", "csv", "--mode", "full_history",
                       "--endpoint", "http://AKID:supersecretpw@minio:9000")
    assert code == 2 and "--endpoint" in err and "supersecretpw" not in err


# ------------------------------------------------------------------------------------------------- update


def test_update_changes_only_given_fields_and_keeps_secret(cli: Cli, monkeypatch, moto_endpoint, tmp_path):
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    assert add_s3(cli, "upd", "bucket-upd", moto_endpoint)[0] == 0
    before = cli.state.get_blob_integration("upd")
    cli.state.finish_window(blob_cursor_sink("hourly"), "upd", before.export_start_date,
                            before.export_start_date + dt.timedelta(hours=1), "run-1", before.export_start_date)
    monkeypatch.delenv("EXPORTS_SECRET_ACCESS_KEY")

    code, out, err = cli("integrations", "update", "--project", "upd", "--format", "jsonl", "--compression", "none")
    assert (code, err) == (0, "")
    after = cli.state.get_blob_integration("upd")
    assert after.file_types == ("jsonl",) and after.compression == "none"
    for name in ("type", "bucket_name", "prefix", "endpoint", "region", "force_path_style", "access_key_id",
                 "secret_access_key", "export_frequency", "export_mode", "export_start_date", "enabled",
                 "created_at"):
        assert getattr(after, name) == getattr(before, name), name
    assert "file_types" in out and "compression" in out and "reset" not in out
    assert cli.state.get_cursor(blob_cursor_sink("hourly"), "upd") is not None  # no mode change: cursor kept


def test_update_mode_resets_cursor(cli: Cli, tmp_path: Path):
    assert add_local(cli, "modes", tmp_path / "m")[0] == 0
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cli.state.finish_window(blob_cursor_sink("daily"), "modes", start, start + dt.timedelta(days=1), "r1", start)
    assert cli.state.get_cursor(blob_cursor_sink("daily"), "modes").last_sync_at == start + dt.timedelta(days=1)

    code, out, err = cli("integrations", "update", "--project", "modes", "--mode", "from_custom_date",
                         "--start-date", "2025-06-01")
    assert (code, err) == (0, "")
    assert "cursor was reset" in out and "re-planned" in out
    saved = cli.state.get_blob_integration("modes")
    assert (saved.export_mode, saved.export_start_date) == ("FROM_CUSTOM_DATE", dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    assert cli.state.get_cursor(blob_cursor_sink("daily"), "modes") is None
    assert cli.state.list_finished_windows(blob_cursor_sink("daily"), "modes") == []

    # --start-date alone moves a custom start; to full history clears it.
    assert cli("integrations", "update", "--project", "modes", "--start-date", "2025-07-01")[0] == 0
    assert cli.state.get_blob_integration("modes").export_start_date == dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
    assert cli("integrations", "update", "--project", "modes", "--mode", "full_history")[0] == 0
    saved = cli.state.get_blob_integration("modes")
    assert (saved.export_mode, saved.export_start_date) == ("FULL_HISTORY", None)
    code, _, err = cli("integrations", "update", "--project", "modes", "--start-date", "2025-01-01")
    assert code == 2 and "--start-date" in err


def test_update_replaces_secret_only_when_given(cli: Cli, monkeypatch, moto_endpoint: str):
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    assert add_s3(cli, "rot", "bucket-rot", moto_endpoint)[0] == 0
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET + "-rotated")
    code, out, err = cli("integrations", "update", "--project", "rot", "--access-key-id", "AKIANEW")
    assert (code, err) == (0, "")
    saved = cli.state.get_blob_integration("rot")
    assert saved.access_key_id == "AKIANEW"
    assert SecretBox(KEY).decrypt(saved.secret_access_key) == SECRET + "-rotated"
    assert "secret_access_key (replaced)" in out
    monkeypatch.delenv("EXPORTS_SECRET_ACCESS_KEY")
    assert cli("integrations", "update", "--project", "rot", "--frequency", "daily")[0] == 0
    saved = cli.state.get_blob_integration("rot")
    assert saved.export_frequency == "daily"
    assert SecretBox(KEY).decrypt(saved.secret_access_key) == SECRET + "-rotated"
    assert SECRET not in cli.transcript


def test_update_errors(cli: Cli, tmp_path: Path):
    code, _, err = cli("integrations", "update", "--project", "ghost", "--frequency", "daily")
    assert code == 2 and "--project" in err and "'ghost'" in err
    assert add_local(cli, "u", tmp_path / "u")[0] == 0
    code, _, err = cli("integrations", "update", "--project", "u")
    assert code == 2 and "nothing to change" in err
    code, _, err = cli("integrations", "update", "--project", "u", "--format", "yaml")
    assert code == 2 and err.startswith("exports-pipeline: --format")
    code, _, err = cli("integrations", "update", "--project", "u", "--access-key-id", "AK")
    assert code == 2 and err.startswith("exports-pipeline: --access-key-id")
    assert cli.state.get_blob_integration("u").file_types == ("jsonl",)


def test_update_moves_local_directory_to_s3_and_back(cli: Cli, tmp_path: Path, moto_endpoint: str):
    assert add_local(cli, "mv", tmp_path / "a")[0] == 0
    code, _, err = cli("integrations", "update", "--project", "mv", "--destination", "s3://moved-bucket/p/",
                       "--endpoint", moto_endpoint)
    assert (code, err) == (0, "")
    saved = cli.state.get_blob_integration("mv")
    assert (saved.type, saved.bucket_name, saved.prefix, saved.endpoint) == (
        "S3_COMPATIBLE", "moved-bucket", "p/", moto_endpoint)
    code, _, err = cli("integrations", "update", "--project", "mv", "--destination", (tmp_path / "b").as_uri())
    assert (code, err) == (0, "")
    saved = cli.state.get_blob_integration("mv")
    assert (saved.type, saved.bucket_name, saved.prefix, saved.endpoint) == ("LOCAL", str(tmp_path / "b"), "", None)
    assert (tmp_path / "b").is_dir()


# ------------------------------------------------------------------------------- disable / enable / remove


def test_disable_enable_remove(cli: Cli, tmp_path: Path):
    assert add_local(cli, "life", tmp_path / "l")[0] == 0
    assert add_local(cli, "other", tmp_path / "o")[0] == 0
    code, out, _ = cli("integrations", "disable", "--project", "life")
    assert code == 0 and "disabled" in out
    assert cli.state.get_blob_integration("life").enabled is False
    assert cli.state.get_blob_integration("other").enabled is True

    cli.state.record_blob_error("life", "AccessDenied: nope")
    code, out, _ = cli("integrations", "enable", "--project", "life")
    assert code == 0 and "cleared its last error" in out
    saved = cli.state.get_blob_integration("life")
    assert saved.enabled is True and saved.last_error is None and saved.last_error_at is None

    code, out, _ = cli("integrations", "list", "--json")
    assert [r["project"] for r in json.loads(out)] == ["life", "other"]

    code, out, _ = cli("integrations", "remove", "--project", "life")
    assert code == 0 and "removed" in out
    assert cli.state.get_blob_integration("life") is None
    assert cli.state.get_blob_integration("other") is not None
    assert (tmp_path / "l").is_dir()

    for command in ("disable", "enable", "remove", "validate"):
        code, out, err = cli("integrations", command, "--project", "life")
        assert code == 2 and out == "" and "--project" in err and "'life'" in err, command


def test_remove_points_to_export_objects_delete(cli: Cli, tmp_path: Path):
    from exports_pipeline.state.models import EventLogEntry

    assert add_local(cli, "gone", tmp_path / "g")[0] == 0
    cli.state.upsert_event_log([EventLogEntry(bucket_name=str(tmp_path / "g"), bucket_path="gone/x.jsonl",
                                              project_id="gone", entity_type="blob_storage_export_daily",
                                              entity_id="k", event_id="e")])
    code, out, _ = cli("integrations", "remove", "--project", "gone")
    assert code == 0 and "NOT deleted" in out and "export-objects delete --project gone" in out
    assert len(cli.state.list_event_log("gone")) == 1


# ------------------------------------------------------------------------------------------------ validate


def test_validate_passes_against_moto(cli: Cli, monkeypatch, moto_endpoint: str, s3_bucket: str):
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    assert add_s3(cli, "val", s3_bucket, moto_endpoint)[0] == 0
    monkeypatch.delenv("EXPORTS_SECRET_ACCESS_KEY")
    code, out, err = cli("integrations", "validate", "--project", "val")
    assert code == 0, err
    assert out.splitlines()[0] == f"PASS s3://{s3_bucket}/exports/"
    assert SECRET not in cli.transcript


def test_validate_fails_for_missing_bucket(cli: Cli, monkeypatch, moto_endpoint: str):
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    assert add_s3(cli, "nob", "no-such-bucket-cli", moto_endpoint)[0] == 0
    code, out, err = cli("integrations", "validate", "--project", "nob")
    assert code != 0 and "PASS" not in out
    assert err.startswith("FAIL NoSuchBucket: ")
    assert SECRET not in cli.transcript


@pytest.mark.parametrize("key_now", ["5f" * 32, None])
def test_validate_with_a_key_that_cannot_decrypt_names_encryption_key(cli: Cli, monkeypatch, moto_endpoint: str,
                                                                       key_now: str | None):
    """Our key, not the destination: exit 2 naming the setting, nothing probed, nothing disabled."""
    monkeypatch.setenv("EXPORTS_SECRET_ACCESS_KEY", SECRET)
    assert add_s3(cli, "keyed", "b-keyed", moto_endpoint)[0] == 0
    if key_now is None:
        monkeypatch.delenv("ENCRYPTION_KEY")
    else:
        monkeypatch.setenv("ENCRYPTION_KEY", key_now)
    get_settings.cache_clear()
    code, out, err = cli("integrations", "validate", "--project", "keyed")
    assert code == 2 and err.startswith("exports-pipeline: ") and "ENCRYPTION_KEY" in err and "PASS" not in out
    assert SECRET not in cli.transcript and KEY not in cli.transcript
    assert cli.state.get_blob_integration("keyed").enabled


def test_validate_local_directory(cli: Cli, tmp_path: Path):
    assert add_local(cli, "loc", tmp_path / "v")[0] == 0
    code, out, _ = cli("integrations", "validate", "--project", "loc")
    assert code == 0 and out.startswith(f"PASS {(tmp_path / 'v').as_uri()}/")
    assert os.listdir(tmp_path / "v") == []  # the probe was deleted
    os.rmdir(tmp_path / "v")
    code, out, err = cli("integrations", "validate", "--project", "loc")
    assert code == 1 and err.startswith("FAIL NoSuchDirectory: ")


def test_add_registers_the_project_partition_at_once(cli, tmp_path, monkeypatch):
    """Found against a real deployment: an integration added by the CLI could not be launched by hand until
    the sensor's next tick registered its partition. With DAGSTER_HOME set, `add-blob` registers it."""
    import dagster as dg

    home = tmp_path / "dagster-home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    code, out, err = add_local(cli, "p1", tmp_path / "out")
    assert code == 0, err
    assert "registered p1 in blob_storage_projects_daily" in out
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("blob_storage_projects_daily") == ["p1"]


def test_add_without_a_dagster_instance_says_the_sensor_registers_it(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    code, out, err = add_local(cli, "p1", tmp_path / "out")
    assert code == 0, err
    assert "DAGSTER_HOME is not set" in out and "blob_storage_integrations_sensor" in out
