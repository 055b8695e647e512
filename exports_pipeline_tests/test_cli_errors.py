"""Clear errors instead of tracebacks or silence (issue 7, item 9), each through its real entry point:
`exports-pipeline` (in process, and as a separate process where the traceback or the exit status is
the point), the settings loader, the state engine and `dagster asset materialize`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exports_pipeline.errors import ConfigError
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.settings import Settings, SettingsError, get_settings
from exports_pipeline.state.engine import StateDatabaseError, dispose_engine
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.cli_harness import cli_in

KEY = "5e" * 32


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`main()` as the console script runs it; returns (code, stdout, stderr)."""
    with cli_in(tmp_path, monkeypatch, capsys, key=KEY,
                unset=("EXPORTS_CLICKHOUSE_URL", "EXPORTS_SECRET_ACCESS_KEY")) as runner:
        yield runner


def add_local(cli, project: str, directory: Path, *extra: str) -> tuple[int, str, str]:
    return cli("integrations", "add-blob", "--project", project, "--destination", directory.as_uri() + "/",
               "--frequency", "daily", "--format", "csv", "--mode", "full_history", *extra)


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def spawn(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "exports_pipeline.cli", *args], env={**os.environ, **env},
                            stderr=subprocess.PIPE, text=True, **kw)


# ------------------------------------------------------------------------------------------------ inputs


def test_huge_max_file_size_is_refused_naming_the_flag(cli, tmp_path):
    """Was: OverflowError from SQLite with a traceback (and PostgreSQL's INTEGER is 32-bit)."""
    for value in ("99999999999999999999999", "5242881", "9" * 5000):
        code, _, err = add_local(cli, "p1", tmp_path / "out", "--max-file-size-mb", value)
        assert code == 2 and one_line(err).startswith("exports-pipeline: --max-file-size-mb must be at most 5242880")
    assert add_local(cli, "p1", tmp_path / "out", "--max-file-size-mb", "5242880")[0] == 0
    code, _, err = cli("integrations", "update", "--project", "p1", "--max-file-size-mb", "99999999999999999999999")
    assert code == 2 and "--max-file-size-mb" in one_line(err)


def test_nul_byte_in_a_file_url_names_the_flag(cli, tmp_path):
    """Was: "exports-pipeline: embedded null byte", no flag named."""
    code, _, err = cli("integrations", "add-blob", "--project", "p1", "--destination", f"file://{tmp_path}/o%00ut/",
                       "--frequency", "daily", "--format", "csv", "--mode", "full_history")
    assert code == 2 and one_line(err).startswith("exports-pipeline: --destination: ") and "NUL" in err
    with pytest.raises(ConfigError, match="NUL"):
        Destination(scheme="file", bucket="/srv/o\x00ut")


@pytest.mark.parametrize("url", ["file:///", "file:///etc/", "file:///proc/self/", "file:///usr/local/share/x/",
                                 "file:///sys/", "file:///dev/shm/", "file:///var/", "file:///home/",
                                 "file:///tmp/../etc/x"])
def test_system_directories_are_refused_as_destinations(cli, tmp_path, url):
    code, _, err = cli("integrations", "add-blob", "--project", "p1", "--destination", url,
                       "--frequency", "daily", "--format", "csv", "--mode", "full_history")
    assert code == 2 and one_line(err).startswith("exports-pipeline: --destination: ") and "system directory" in err


def test_a_symlink_into_a_system_directory_is_refused_at_add_update_and_export(cli, tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    code, _, err = add_local(cli, "p1", link / "exports")
    assert code == 2 and "system directory '/etc'" in one_line(err)
    assert add_local(cli, "p1", tmp_path / "fine")[0] == 0
    code, _, err = cli("integrations", "update", "--project", "p1", "--destination", "file:///proc/self/")
    assert code == 2 and "--destination" in one_line(err) and "system directory" in err
    stored = StateStore(database_url=get_settings().database_url).get_blob_integration("p1")
    assert stored.bucket_name == str(tmp_path / "fine")
    with pytest.raises(ConfigError, match="system directory") as error:  # a row stored before this check
        Destination(scheme="file", bucket=str(link))
    assert error.value.field == "bucket"
    assert Destination(scheme="file", bucket=str(tmp_path / "fine")).bucket == str(tmp_path / "fine")


# ------------------------------------------------------------------------------------------------ output


def test_a_closed_pipe_ends_the_command_quietly(cli, tmp_path):
    """Was: BrokenPipeError with a traceback for `integrations update ... | head -1`."""
    assert add_local(cli, "p1", tmp_path / "out")[0] == 0
    env = {"EXPORTS_HOME": str(tmp_path / "home"), "ENCRYPTION_KEY": KEY}
    proc = spawn(["integrations", "update", "--project", "p1", "--format", "jsonl"], env, stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command prints anything
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (141, ""), err
    saved = StateStore(database_url=get_settings().database_url).get_blob_integration("p1")
    assert saved.file_types == ("jsonl",)  # the update itself was done


# ------------------------------------------------------------------------------------ the state database


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connections to it are refused


def test_unreachable_postgresql_is_one_line_with_the_masked_url_and_the_reason(cli, monkeypatch):
    """Was: 138 lines of SQLAlchemy traceback."""
    url = f"postgresql+psycopg2://exports:pg-s3cret@127.0.0.1:{_refused_port()}/state"
    monkeypatch.setenv("EXPORTS_DATABASE_URL", url)
    code, out, err = cli("integrations", "list")
    assert code == 1 and out == ""
    assert one_line(err).startswith("exports-pipeline: cannot open the state database postgresql+psycopg2://"
                                    "exports:***@127.0.0.1:")
    assert "(EXPORTS_DATABASE_URL)" in err and "Connection refused" in err and "pg-s3cret" not in err
    dispose_engine(url)


def test_a_bad_sqlite_path_is_one_line_with_the_url_and_the_reason(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("EXPORTS_DATABASE_URL", "sqlite:////proc/state.db")
    code, _, err = cli("integrations", "list")
    assert code == 1
    assert one_line(err) == ("exports-pipeline: cannot open the state database sqlite:////proc/state.db "
                             "(EXPORTS_DATABASE_URL): unable to open database file\n")
    dispose_engine("sqlite:////proc/state.db")
    with pytest.raises(StateDatabaseError, match="cannot open the state database"):  # the engine, for Dagster runs
        StateStore(database_url=f"sqlite:///{tmp_path}").list_blob_integrations()
    dispose_engine(f"sqlite:///{tmp_path}")


def test_database_url_into_a_missing_directory_is_refused_not_created(cli, tmp_path, monkeypatch):
    """Was: the directory tree was created silently, with a fresh, empty state database in it."""
    missing = tmp_path / "typo" / "deeper"
    url = f"sqlite:///{missing / 'state.db'}"
    with pytest.raises(SettingsError, match="EXPORTS_DATABASE_URL=.*directory .* does not exist"):
        Settings.from_env({"EXPORTS_HOME": str(tmp_path / "home"), "EXPORTS_DATABASE_URL": url})
    monkeypatch.setenv("EXPORTS_DATABASE_URL", url)
    code, _, err = cli("integrations", "list")
    assert code == 2 and one_line(err).startswith("exports-pipeline: EXPORTS_DATABASE_URL=")
    assert not (tmp_path / "typo").exists()
    monkeypatch.delenv("EXPORTS_DATABASE_URL")
    assert cli("integrations", "list")[:2] == (0, "no integrations\n")  # the default's directory is created
    assert (tmp_path / "home" / "state.db").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_state_database_files_are_created_0600(tmp_path, umask):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    old = os.umask(umask)
    try:
        store = StateStore(database_url=url)
        store.list_blob_integrations()  # creates and migrates the file; WAL keeps -wal and -shm open
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
        StateStore(database_url=url).dispose()
    assert modes == {"state.db": "0o600", "state.db-wal": "0o600", "state.db-shm": "0o600"}


# ------------------------------------------------------------------------------- unregistered partitions


def test_dagster_asset_materialize_says_the_partition_is_not_registered_yet(cli, tmp_path, monkeypatch):
    """Was: "Could not find a partition with key", the same words as for a project that does not exist.
    Dagster's own `asset materialize` command (in process through click, as the console script runs it)."""
    from click.testing import CliRunner
    from dagster._cli.asset import asset_materialize_command

    assert add_local(cli, "proj-new", tmp_path / "out")[0] == 0
    (tmp_path / "dagster").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    result = CliRunner().invoke(asset_materialize_command, [
        "-m", "exports_pipeline.definitions", "--select", "blob_storage_export_daily",
        "--partition", "2026-01-05|proj-new"])
    assert result.exit_code != 0
    assert ("`2026-01-05|proj-new`: project 'proj-new' has an integration (frequency daily) but its partition is "
            "not registered yet: blob_storage_integrations_sensor registers it on its next tick"
            ) in str(result.exception.__context__)


def test_unknown_partitions_say_which_part_is_wrong(cli, tmp_path):
    """The same check on the asset's own path (`execute_in_process`, as the demo runs it)."""
    import dagster as dg

    from exports_pipeline.definitions import build_definitions

    assert add_local(cli, "proj-d", tmp_path / "out")[0] == 0
    assert add_local(cli, "proj-off", tmp_path / "out")[0] == 0
    assert cli("integrations", "disable", "--project", "proj-off")[0] == 0
    job = build_definitions(get_settings()).resolve_job_def("blob_storage_export_daily_job")
    expected = {
        "2026-01-05|nope": "no such project: 'nope' has no object-storage integration",
        "2026-01-05|proj-d": "project 'proj-d' has an integration (frequency daily) but its partition is not "
                             "registered yet",
        "2026-01-05|proj-off": "project 'proj-off' has an integration (frequency daily) but it is disabled",
        "1999-01-05|proj-d": "'1999-01-05' is not a daily window of blob_storage_export_daily",
        "proj-d": "is not a partition key of blob_storage_export_daily: keys are date|project",
    }
    with dg.instance_for_test() as instance:
        for key, words in expected.items():
            with pytest.raises(dg.DagsterUnknownPartitionError) as error:
                job.execute_in_process(partition_key=key, instance=instance)
            assert words in str(error.value), key
