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


def test_batch_export_defaults(tmp_path: Path):
    b = Settings.from_env({"EXPORTS_HOME": str(tmp_path)}).batch_export
    assert (b.row_limit, b.link_hours, b.retention_days) == (1_500_000, 24, 30)
    assert b.destination == (tmp_path.resolve() / "batch-exports").as_uri() + "/"
    dest = b.store_destination()
    assert dest.scheme == "file" and dest.bucket == str(tmp_path.resolve() / "batch-exports")
    assert b.smtp_url is None and b.email_from is None


def test_batch_export_s3_destination_links_use_the_external_endpoint_and_hide_secrets(tmp_path: Path):
    s = Settings.from_env({
        "EXPORTS_HOME": str(tmp_path), "EXPORTS_BATCH_EXPORT_DESTINATION": "s3://exports/batch/",
        "EXPORTS_BATCH_EXPORT_ENDPOINT": "http://minio:9000", "EXPORTS_BATCH_EXPORT_ACCESS_KEY_ID": "AKIA1",
        "EXPORTS_BATCH_EXPORT_SECRET_ACCESS_KEY": "s3-hunter2", "EXPORTS_BATCH_EXPORT_FORCE_PATH_STYLE": "true",
        "EXPORTS_BATCH_EXPORT_EXTERNAL_ENDPOINT": "https://files.example.com",
        "EXPORTS_BATCH_EXPORT_LINK_HOURS": "48", "EXPORTS_BATCH_EXPORT_RETENTION_DAYS": "0",
        "EXPORTS_BATCH_EXPORT_ROW_LIMIT": "1000",
        "EXPORTS_SMTP_URL": "smtps://mailer:smtp-hunter3@mail.example.com:465", "EXPORTS_EMAIL_FROM": "noreply@example.com",
    })
    b = s.batch_export
    assert (b.row_limit, b.link_hours, b.retention_days) == (1000, 48, 0)
    assert b.store_destination().endpoint_url == "http://minio:9000"
    assert b.store_destination().force_path_style is True
    assert b.link_destination().endpoint_url == "https://files.example.com"
    assert (b.link_destination().bucket, b.link_destination().prefix) == ("exports", "batch/")
    for text in (repr(s), str(s), repr(b), repr(b.store_destination())):
        assert "s3-hunter2" not in text and "smtp-hunter3" not in text


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"EXPORTS_BATCH_EXPORT_ROW_LIMIT": "0"}, "EXPORTS_BATCH_EXPORT_ROW_LIMIT"),
        ({"EXPORTS_BATCH_EXPORT_ROW_LIMIT": "1.5M"}, "EXPORTS_BATCH_EXPORT_ROW_LIMIT"),
        ({"EXPORTS_BATCH_EXPORT_LINK_HOURS": "169"}, "EXPORTS_BATCH_EXPORT_LINK_HOURS"),
        ({"EXPORTS_BATCH_EXPORT_LINK_HOURS": "0"}, "EXPORTS_BATCH_EXPORT_LINK_HOURS"),
        ({"EXPORTS_BATCH_EXPORT_RETENTION_DAYS": "-1"}, "EXPORTS_BATCH_EXPORT_RETENTION_DAYS"),
        ({"EXPORTS_BATCH_EXPORT_DESTINATION": "gs://bucket/"}, "EXPORTS_BATCH_EXPORT_DESTINATION"),
        ({"EXPORTS_BATCH_EXPORT_DESTINATION": "s3://bucket/no-slash"}, "EXPORTS_BATCH_EXPORT_DESTINATION"),
        ({"EXPORTS_BATCH_EXPORT_DESTINATION": "s3://bucket/", "EXPORTS_BATCH_EXPORT_ENDPOINT": "ftp://x"},
         "EXPORTS_BATCH_EXPORT_ENDPOINT"),
        ({"EXPORTS_BATCH_EXPORT_DESTINATION": "s3://bucket/", "EXPORTS_BATCH_EXPORT_EXTERNAL_ENDPOINT": "files"},
         "EXPORTS_BATCH_EXPORT_EXTERNAL_ENDPOINT"),
        ({"EXPORTS_BATCH_EXPORT_DESTINATION": "s3://bucket/", "EXPORTS_BATCH_EXPORT_ACCESS_KEY_ID": "AKIA"},
         "EXPORTS_BATCH_EXPORT_SECRET_ACCESS_KEY"),
        ({"EXPORTS_BATCH_EXPORT_FORCE_PATH_STYLE": "maybe"}, "EXPORTS_BATCH_EXPORT_FORCE_PATH_STYLE"),
        ({"EXPORTS_BATCH_EXPORT_SSE": "DES"}, "EXPORTS_BATCH_EXPORT_SSE"),
        ({"EXPORTS_SMTP_URL": "http://u:pw@mail.example.com", "EXPORTS_EMAIL_FROM": "a@example.com"}, "EXPORTS_SMTP_URL"),
        ({"EXPORTS_SMTP_URL": "smtp://mail.example.com"}, "EXPORTS_EMAIL_FROM"),
        ({"EXPORTS_SMTP_URL": "smtp://mail.example.com", "EXPORTS_EMAIL_FROM": "nobody"}, "EXPORTS_EMAIL_FROM"),
    ],
)
def test_bad_batch_export_values_name_the_variable(env, name, tmp_path):
    with pytest.raises(SettingsError, match=name) as err:
        Settings.from_env({"EXPORTS_HOME": str(tmp_path), **env})
    assert "pw@" not in str(err.value)
