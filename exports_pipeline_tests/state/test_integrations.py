"""Integration rows for blob storage, PostHog and Mixpanel round trip on both backends."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from exports_pipeline.state import BlobIntegration, MixpanelIntegration, PostHogIntegration, StateStore
from exports_pipeline.state.models import SINK_BLOB, SINK_MIXPANEL, SINK_POSTHOG, blob_cursor_sink

T0 = datetime(2024, 3, 1, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def blob(box, project_id: str = "p1", **kw) -> BlobIntegration:
    values = dict(
        project_id=project_id, type="S3_COMPATIBLE", bucket_name="exports", export_frequency="hourly",
        file_types=["jsonl", "parquet"], prefix="langfuse/", access_key_id="AKIA1",
        secret_access_key=box.encrypt("s3-secret"), region="eu-west-1", endpoint="http://minio:9000",
        force_path_style=True, export_mode="FROM_CUSTOM_DATE", export_start_date=T0,
        export_field_groups=["core", "io"], export_tuning={"rows_per_file": 1000}, compression="zstd",
        sse="aws:kms", sse_kms_key_id="kms-1", max_file_size_mb=256,
        key_template="{project_id}/{window_start}/{part}.{ext}",
    )
    values.update(kw)
    return BlobIntegration(**values)


def _aware_utc(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_blob_round_trip(store: StateStore, box):
    before = datetime.now(UTC)
    saved = store.upsert_blob_integration(blob(box))
    assert saved == store.get_blob_integration("p1")
    for f in dataclasses.fields(BlobIntegration):
        if f.name not in {"created_at", "updated_at", "next_sync_at", "last_sync_at", "run_started_at",
                          "last_error", "last_error_at", "last_failure_notification_sent_at"}:
            assert getattr(saved, f.name) == getattr(blob(box), f.name) or f.name == "secret_access_key", f.name
    assert box.decrypt(saved.secret_access_key) == "s3-secret"
    assert saved.file_types == ("jsonl", "parquet")
    assert saved.export_field_groups == ("core", "io")
    assert saved.export_tuning == {"rows_per_file": 1000}
    assert saved.compressed is True
    assert saved.export_start_date == T0 and _aware_utc(saved.export_start_date)
    assert _aware_utc(saved.created_at) and _aware_utc(saved.updated_at)
    assert before <= saved.created_at <= datetime.now(UTC)
    assert saved.last_sync_at is None and saved.last_error is None
    assert store.get_blob_integration("other") is None


def test_blob_local_type_and_defaults(store: StateStore, tmp_path):
    saved = store.upsert_blob_integration(
        BlobIntegration(project_id="local", type="LOCAL", bucket_name=str(tmp_path), export_frequency="daily")
    )
    assert saved.file_types == ("parquet",)
    assert saved.compression == "none" and saved.compressed is False
    assert saved.region == "auto" and saved.export_source == "EVENTS" and saved.enabled is True
    assert saved.access_key_id is None and saved.secret_access_key is None


def test_timestamps_in_other_zones_come_back_as_utc(store: StateStore, box):
    start = datetime(2024, 3, 1, 2, 30, tzinfo=PLUS2)  # = 00:30 UTC
    saved = store.upsert_blob_integration(blob(box, export_start_date=start))
    assert saved.export_start_date == datetime(2024, 3, 1, 0, 30, tzinfo=UTC)
    assert saved.export_start_date.tzinfo == UTC
    finished = store.mark_blob_run_finished("p1", last_sync_at=datetime(2024, 3, 2, 1, tzinfo=PLUS2))
    assert finished.last_sync_at == datetime(2024, 3, 1, 23, tzinfo=UTC)
    assert store.get_blob_integration("p1").last_sync_at.tzinfo == UTC


def test_update_preserves_created_at_and_state(store: StateStore, box):
    first = store.upsert_blob_integration(blob(box))
    store.mark_blob_run_finished("p1", last_sync_at=T0 + timedelta(hours=5))
    second = store.upsert_blob_integration(blob(box, bucket_name="other-bucket", file_types=["csv"]))
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert second.bucket_name == "other-bucket" and second.file_types == ("csv",)
    assert second.last_sync_at == T0 + timedelta(hours=5), "config-only change keeps the position"


def test_mode_change_resets_last_sync_and_cursor(store: StateStore, box):
    store.upsert_blob_integration(blob(box))
    store.mark_blob_run_finished("p1", last_sync_at=T0 + timedelta(hours=3))
    hourly, daily = blob_cursor_sink("hourly"), blob_cursor_sink("daily")
    for sink in (hourly, daily, SINK_BLOB, SINK_POSTHOG, "object_storageX", "objectXstorage:hourly"):
        store.finish_window(sink, "p1", T0, T0 + timedelta(hours=1), "r1", origin=T0)
    store.finish_window(hourly, "p2", T0, T0 + timedelta(hours=1), "r1", origin=T0)

    changed = store.upsert_blob_integration(blob(box, export_mode="FULL_HISTORY", export_start_date=None))
    assert changed.last_sync_at is None
    assert changed.next_sync_at is not None and _aware_utc(changed.next_sync_at)
    for sink in (hourly, daily, SINK_BLOB):
        assert store.get_cursor(sink, "p1") is None, sink
        assert store.list_finished_windows(sink, "p1") == [], sink
    assert store.get_cursor(SINK_POSTHOG, "p1") is not None, "other sinks are untouched"
    assert store.get_cursor("object_storageX", "p1") is not None, "only the family, not a prefix match"
    assert store.get_cursor("objectXstorage:hourly", "p1") is not None, "'_' is not a LIKE wildcard here"
    assert store.get_cursor(hourly, "p2") is not None, "other projects are untouched"


def test_start_date_change_resets_last_sync(store: StateStore, box):
    store.upsert_blob_integration(blob(box))
    store.mark_blob_run_finished("p1", last_sync_at=T0 + timedelta(hours=3))
    moved = store.upsert_blob_integration(blob(box, export_start_date=T0 - timedelta(days=1)))
    assert moved.last_sync_at is None


def test_from_today_keeps_its_start_date_across_saves(store: StateStore, box):
    before = datetime.now(UTC)
    first = store.upsert_blob_integration(blob(box, export_mode="FROM_TODAY", export_start_date=None))
    assert before <= first.export_start_date <= datetime.now(UTC)
    store.mark_blob_run_finished("p1", last_sync_at=T0)
    again = store.upsert_blob_integration(blob(box, export_mode="FROM_TODAY", export_start_date=None,
                                               bucket_name="b2"))
    assert again.export_start_date == first.export_start_date
    assert again.last_sync_at == T0, "re-saving FROM_TODAY must not restart the export"


def test_omitted_secret_is_kept_while_key_id_given(store: StateStore, box):
    store.upsert_blob_integration(blob(box))
    kept = store.upsert_blob_integration(blob(box, secret_access_key=None))
    assert box.decrypt(kept.secret_access_key) == "s3-secret"
    cleared = store.upsert_blob_integration(blob(box, access_key_id=None, secret_access_key=None))
    assert cleared.access_key_id is None and cleared.secret_access_key is None


def test_disable_records_truncated_error(store: StateStore, box):
    store.upsert_blob_integration(blob(box))
    long_error = "AccessDenied: " + "x" * 5000
    disabled = store.disable_blob_integration("p1", long_error)
    assert disabled.enabled is False
    assert disabled.last_error == long_error[:1000] and len(disabled.last_error) == 1000
    assert _aware_utc(disabled.last_error_at)
    assert store.get_blob_integration("p1") == disabled
    assert store.list_blob_integrations(enabled=True) == []

    enabled = store.enable_blob_integration("p1")
    assert enabled.enabled is True and enabled.last_error is None and enabled.last_error_at is None
    quiet = store.disable_blob_integration("p1")
    assert quiet.enabled is False and quiet.last_error is None  # disabling without an error records none
    assert store.disable_blob_integration("missing", "e") is None


def test_run_markers_and_errors(store: StateStore, box):
    store.upsert_blob_integration(blob(box))
    started = store.mark_blob_run_started("p1")
    assert started.run_started_at is not None and _aware_utc(started.run_started_at)
    failed = store.mark_blob_run_finished("p1", error="boom")
    assert failed.run_started_at is None and failed.last_error == "boom" and failed.last_error_at is not None
    assert store.record_blob_error("p1", "e" * 2000).last_error == "e" * 1000
    assert store.record_blob_error("p1", "").last_error == "(no message)"
    ok = store.mark_blob_run_finished("p1", last_sync_at=T0, next_sync_at=T0 + timedelta(hours=1))
    assert ok.last_error is None and ok.last_error_at is None
    assert ok.last_sync_at == T0 and ok.next_sync_at == T0 + timedelta(hours=1)


def test_list_filters(store: StateStore, box):
    store.upsert_blob_integration(blob(box, "a", export_frequency="hourly"))
    store.upsert_blob_integration(blob(box, "b", export_frequency="daily"))
    store.upsert_blob_integration(blob(box, "c", export_frequency="daily", enabled=False))
    assert [i.project_id for i in store.list_blob_integrations()] == ["a", "b", "c"]
    assert [i.project_id for i in store.list_blob_integrations(frequency="daily")] == ["b", "c"]
    assert [i.project_id for i in store.list_blob_integrations(enabled=True, frequency="daily")] == ["b"]
    assert [i.project_id for i in store.list_blob_integrations(enabled=False)] == ["c"]


def test_delete_blob_forgets_cursor(store: StateStore, box):
    store.upsert_blob_integration(blob(box))
    store.finish_window(blob_cursor_sink("hourly"), "p1", T0, T0 + timedelta(hours=1), "r1", origin=T0)
    store.finish_window(SINK_MIXPANEL, "p1", T0, T0 + timedelta(hours=1), "r1", origin=T0)
    assert store.delete_blob_integration("p1") is True
    assert store.get_blob_integration("p1") is None
    assert store.get_cursor(blob_cursor_sink("hourly"), "p1") is None
    assert store.get_cursor(SINK_MIXPANEL, "p1") is not None
    assert store.delete_blob_integration("p1") is False


def test_posthog_round_trip(store: StateStore, box):
    stored_key = box.encrypt("phc_abc")
    saved = store.upsert_posthog_integration(
        PostHogIntegration(project_id="p1", encrypted_posthog_api_key=stored_key,
                           posthog_host_name="https://eu.i.posthog.com")
    )
    assert saved == store.get_posthog_integration("p1")
    assert box.decrypt(saved.encrypted_posthog_api_key) == "phc_abc"
    assert saved.posthog_host_name == "https://eu.i.posthog.com" and saved.enabled is True
    assert saved.export_source == "EVENTS" and _aware_utc(saved.created_at)
    assert "phc_abc" not in repr(saved) and stored_key not in repr(saved)

    updated = store.upsert_posthog_integration(dataclasses.replace(saved, posthog_host_name="https://x.example"))
    assert updated.created_at == saved.created_at and updated.posthog_host_name == "https://x.example"

    synced = store.mark_posthog_synced("p1", T0)
    assert synced.last_sync_at == T0 and _aware_utc(synced.last_sync_at)
    assert store.record_posthog_error("p1", "429").last_error == "429"
    disabled = store.disable_posthog_integration("p1", "bad host " + "h" * 2000)
    assert disabled.enabled is False and len(disabled.last_error) == 1000
    assert store.list_posthog_integrations(enabled=True) == []
    enabled = store.enable_posthog_integration("p1")
    assert enabled.enabled is True and enabled.last_error is None and enabled.last_error_at is None
    named = store.upsert_posthog_integration(dataclasses.replace(enabled, project_name="Shop (prod)"))
    assert store.get_posthog_integration("p1").project_name == named.project_name == "Shop (prod)"
    assert [i.project_id for i in store.list_posthog_integrations(enabled=True)] == ["p1"]
    store.finish_window(SINK_POSTHOG, "p1", T0, T0 + timedelta(hours=1), "r1", origin=T0)
    assert store.delete_posthog_integration("p1") is True
    assert store.get_posthog_integration("p1") is None
    assert store.get_cursor(SINK_POSTHOG, "p1") is None


def test_mixpanel_round_trip(store: StateStore, box):
    saved = store.upsert_mixpanel_integration(
        MixpanelIntegration(project_id="p1", encrypted_mixpanel_project_token=box.encrypt("tok"),
                            mixpanel_region="api-eu")
    )
    assert saved == store.get_mixpanel_integration("p1")
    assert box.decrypt(saved.encrypted_mixpanel_project_token) == "tok"
    assert saved.mixpanel_region == "api-eu"
    moved = store.upsert_mixpanel_integration(dataclasses.replace(saved, mixpanel_region="api-in"))
    assert moved.mixpanel_region == "api-in" and moved.created_at == saved.created_at
    assert store.mark_mixpanel_synced("p1", T0).last_sync_at == T0
    assert store.record_mixpanel_error("p1", "x" * 1001).last_error == "x" * 1000
    assert store.disable_mixpanel_integration("p1").enabled is False
    assert store.list_mixpanel_integrations(enabled=False)[0].project_id == "p1"
    assert store.enable_mixpanel_integration("p1").enabled is True
    assert store.delete_mixpanel_integration("p1") is True
    assert store.list_mixpanel_integrations() == []


def test_kinds_do_not_share_rows(store: StateStore, box):
    store.upsert_posthog_integration(PostHogIntegration("p1", box.encrypt("k"), "https://h.example"))
    assert store.get_mixpanel_integration("p1") is None
    assert store.get_blob_integration("p1") is None
    assert store.disable_mixpanel_integration("p1") is None


def test_secrets_never_logged_even_with_sql_logging(store: StateStore, box, caplog):
    secret = box.encrypt("super-secret-key")
    sql_logger = logging.getLogger("sqlalchemy.engine")
    previous = sql_logger.level
    sql_logger.setLevel(logging.INFO)  # what someone debugging a query would switch on
    try:
        with caplog.at_level(logging.DEBUG):
            store.upsert_posthog_integration(PostHogIntegration("p1", secret, "https://h.example"))
            store.upsert_blob_integration(blob(box, access_key_id="AKIA-VISIBLE-ID"))
            store.get_posthog_integration("p1")
    finally:
        sql_logger.setLevel(previous)
    assert "INSERT INTO posthog_integrations" in caplog.text, "SQL logging was on"
    assert secret not in caplog.text and "super-secret-key" not in caplog.text
    assert "AKIA-VISIBLE-ID" not in caplog.text


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("field", "kw"),
    [
        ("export_frequency", {"export_frequency": "every_minute"}),
        ("export_mode", {"export_mode": "SOMETIMES"}),
        ("type", {"type": "GCS"}),
        ("file_types", {"file_types": []}),
        ("file_types", {"file_types": ["xml"]}),
        ("file_types", {"file_types": "csv"}),
        ("file_types", {"file_types": ["csv", "csv"]}),
        ("compression", {"compression": "brotli"}),
        ("sse", {"sse": "rot13"}),
        ("sse_kms_key_id", {"sse": "AES256", "sse_kms_key_id": "k"}),
        ("export_start_date", {"export_start_date": datetime(2024, 1, 1)}),
        ("export_start_date", {"export_mode": "FROM_CUSTOM_DATE", "export_start_date": None}),
        ("export_start_date", {"export_mode": "FULL_HISTORY", "export_start_date": T0}),
        ("prefix", {"prefix": "no-slash"}),
        ("secret_access_key", {"secret_access_key": "plaintext-secret"}),
        ("endpoint", {"endpoint": "minio:9000"}),
        ("max_file_size_mb", {"max_file_size_mb": 0}),
        ("export_field_groups", {"export_field_groups": ["nope"]}),
        ("export_source", {"export_source": "SPANS"}),
        ("bucket_name", {"type": "LOCAL", "bucket_name": "relative/dir"}),
        ("project_id", {"project_id": ""}),
    ],
)
def test_bad_blob_input_names_the_field(store: StateStore, box, field, kw):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        store.upsert_blob_integration(blob(box, **kw))
    assert store.list_blob_integrations() == []


def test_plaintext_secret_is_not_echoed(store: StateStore, box):
    with pytest.raises(ValueError) as err:
        store.upsert_blob_integration(blob(box, secret_access_key="plaintext-secret"))
    assert "secret_access_key" in str(err.value) and "plaintext-secret" not in str(err.value)
    with pytest.raises(ValueError, match="encrypted_posthog_api_key") as err:
        store.upsert_posthog_integration(PostHogIntegration("p", "phc_plain", "https://h.example"))
    assert "phc_plain" not in str(err.value)
    assert store.list_blob_integrations() == [] and store.list_posthog_integrations() == []


def test_bad_analytics_input_names_the_field(store: StateStore, box):
    with pytest.raises(ValueError, match="mixpanel_region"):
        store.upsert_mixpanel_integration(MixpanelIntegration("p", box.encrypt("t"), mixpanel_region="api-us"))
    with pytest.raises(ValueError, match="posthog_host_name"):
        store.upsert_posthog_integration(PostHogIntegration("p", box.encrypt("t"), "eu.posthog.com"))
    with pytest.raises(ValueError, match="last_sync_at"):
        MixpanelIntegration("p", box.encrypt("t"), last_sync_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="integration"):
        store.upsert_mixpanel_integration(PostHogIntegration("p", box.encrypt("t"), "https://h.example"))
    assert store.list_mixpanel_integrations() == [] and store.list_posthog_integrations() == []


def test_bad_store_arguments_name_the_field(store: StateStore, box):
    with pytest.raises(ValueError, match="frequency"):
        store.list_blob_integrations(frequency="monthly")
    store.upsert_blob_integration(blob(box))
    with pytest.raises(ValueError, match="last_sync_at"):
        store.mark_blob_run_finished("p1", last_sync_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="last_sync_at"):
        store.mark_posthog_synced("p1", datetime(2024, 1, 1))
    assert store.get_blob_integration("p1").last_sync_at is None


def test_mixpanel_service_account_round_trip(store: StateStore, box):
    """A service account (username, encrypted secret, numeric project id) instead of the token, with an
    endpoint override; enabling again clears the recorded error."""
    saved = store.upsert_mixpanel_integration(MixpanelIntegration(
        project_id="p1", mixpanel_service_account_username="sa.user", mixpanel_project_id="3141592",
        encrypted_mixpanel_service_account_secret=box.encrypt("sa-secret"), endpoint="http://127.0.0.1:9/mp"))
    assert saved == store.get_mixpanel_integration("p1")
    assert saved.uses_service_account and saved.encrypted_mixpanel_project_token is None
    assert box.decrypt(saved.encrypted_mixpanel_service_account_secret) == "sa-secret"
    assert "sa-secret" not in repr(saved) and saved.encrypted_mixpanel_service_account_secret not in repr(saved)
    store.disable_mixpanel_integration("p1", error="401 Invalid credentials")
    assert store.get_mixpanel_integration("p1").last_error == "401 Invalid credentials"
    enabled = store.enable_mixpanel_integration("p1")
    assert enabled.enabled and enabled.last_error is None and enabled.last_error_at is None


@pytest.mark.parametrize("kw, match", [
    ({}, "a project token, or a service account"),
    ({"token": True, "mixpanel_service_account_username": "u"}, "not both"),
    ({"mixpanel_service_account_username": "u", "secret": True}, "a project token, or a service account"),
    ({"mixpanel_service_account_username": "u", "secret": True, "mixpanel_project_id": "12a"}, "numeric"),
    ({"token": True, "endpoint": "ftp://x"}, "endpoint"),
])
def test_mixpanel_credentials_are_one_of_two_shapes(box, kw, match):
    kw = dict(kw)
    if kw.pop("token", False):
        kw["encrypted_mixpanel_project_token"] = box.encrypt("tok")
    if kw.pop("secret", False):
        kw["encrypted_mixpanel_service_account_secret"] = box.encrypt("s")
    with pytest.raises(ValueError, match=match):
        MixpanelIntegration("p", **kw)
