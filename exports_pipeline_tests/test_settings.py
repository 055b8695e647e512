from pathlib import Path

import pytest

from exports_pipeline.settings import Settings, SettingsError
from exports_pipeline.urls import mask_url

KEY = "ab" * 32


def test_defaults_live_under_exports_home(tmp_path: Path):
    s = Settings.from_env({"EXPORTS_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve()
    assert s.clickhouse_url == f"chdb://{tmp_path.resolve() / 'chdb'}"
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'state.db'}"
    assert s.events_table == "events_full"
    assert s.encryption_key is None
    assert s.chdb_path == str(tmp_path.resolve() / "chdb")
    assert (s.late_rows_lookback_hours, s.late_rows_interval_seconds) == (72, 900)


def test_late_rows_settings_are_read(tmp_path: Path):
    s = Settings.from_env({"EXPORTS_HOME": str(tmp_path), "EXPORTS_LATE_ROWS_LOOKBACK_HOURS": "168",
                           "EXPORTS_LATE_ROWS_INTERVAL_SECONDS": "300"})
    assert (s.late_rows_lookback_hours, s.late_rows_interval_seconds) == (168, 300)


def test_default_home_is_dot_exports_in_working_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).home == tmp_path.resolve() / ".exports"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"EXPORTS_CLICKHOUSE_URL": "ftp://host/db"}, "EXPORTS_CLICKHOUSE_URL"),
        ({"EXPORTS_CLICKHOUSE_URL": "chdb://relative/dir"}, "EXPORTS_CLICKHOUSE_URL"),
        ({"EXPORTS_EVENTS_TABLE": "events; DROP TABLE x"}, "EXPORTS_EVENTS_TABLE"),
        ({"EXPORTS_DATABASE_URL": "mysql://x"}, "EXPORTS_DATABASE_URL"),
        ({"EXPORTS_DATABASE_URL": "postgresql://u:pw@h/db"}, "EXPORTS_DATABASE_URL"),
        ({"ENCRYPTION_KEY": "abc"}, "ENCRYPTION_KEY"),
        ({"ENCRYPTION_KEY": "zz" * 32}, "ENCRYPTION_KEY"),
        ({"EXPORTS_SETTLE_MINUTES": "soon"}, "EXPORTS_SETTLE_MINUTES"),
        ({"EXPORTS_LATE_ROWS_LOOKBACK_HOURS": "3d"}, "EXPORTS_LATE_ROWS_LOOKBACK_HOURS"),
        ({"EXPORTS_LATE_ROWS_LOOKBACK_HOURS": "0"}, "EXPORTS_LATE_ROWS_LOOKBACK_HOURS"),
        ({"EXPORTS_LATE_ROWS_LOOKBACK_HOURS": "-1"}, "EXPORTS_LATE_ROWS_LOOKBACK_HOURS"),
        ({"EXPORTS_LATE_ROWS_INTERVAL_SECONDS": "15m"}, "EXPORTS_LATE_ROWS_INTERVAL_SECONDS"),
        ({"EXPORTS_LATE_ROWS_INTERVAL_SECONDS": "0"}, "EXPORTS_LATE_ROWS_INTERVAL_SECONDS"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, names, tmp_path):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env({"EXPORTS_HOME": str(tmp_path), **env})


def test_passwords_are_masked_in_errors_and_repr(tmp_path):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"EXPORTS_HOME": str(tmp_path), "EXPORTS_DATABASE_URL": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in str(err.value)
    s = Settings.from_env({
        "EXPORTS_HOME": str(tmp_path), "ENCRYPTION_KEY": KEY,
        "EXPORTS_CLICKHOUSE_URL": "https://user:topsecret@ch.example.com:8443/langfuse",
        "EXPORTS_DATABASE_URL": "postgresql+psycopg2://u:pgsecret@db:5432/state",
    })
    for text in (repr(s), str(s)):
        assert "topsecret" not in text and "pgsecret" not in text and KEY not in text
    assert mask_url("https://user:topsecret@ch:8443/db") == "https://user:***@ch:8443/db"
    assert mask_url("http://ch:8123/db") == "http://ch:8123/db"


def test_key_file_under_home_is_used_when_variable_unset(tmp_path):
    from exports_pipeline.settings import store_generated_key

    path = store_generated_key(tmp_path, KEY)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert Settings.from_env({"EXPORTS_HOME": str(tmp_path)}).encryption_key == KEY
    with pytest.raises(SettingsError, match="ENCRYPTION_KEY"):
        Settings.from_env({"EXPORTS_HOME": str(tmp_path / "other")}).require_encryption_key()
