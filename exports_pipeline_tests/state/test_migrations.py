"""The hand-written migration must build exactly `tables.metadata`, idempotently, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from exports_pipeline.state import StateStore
from exports_pipeline.state.engine import get_engine, write_tx
from exports_pipeline.state.migrate import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from exports_pipeline.state.tables import metadata

EXPECTED_TABLES = {
    "blob_storage_integrations", "posthog_integrations", "mixpanel_integrations", "batch_exports",
    "event_log", "sync_cursors", "sync_windows",
}


def _tables(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def test_upgrade_on_empty_database_then_noop(state_database_url: str):
    assert current_revision(state_database_url) is None
    assert _tables(state_database_url) == set()
    head = head_revision()
    assert head == "0006"
    assert upgrade(state_database_url) == head
    assert current_revision(state_database_url) == head
    assert _tables(state_database_url) == EXPECTED_TABLES | {VERSION_TABLE}

    store = StateStore(database_url=state_database_url)
    batch = store.create_batch_export("p", "u", "n", {"tableName": "events"}, "CSV")
    assert upgrade(state_database_url) == head  # second run changes nothing
    assert store.get_batch_export(batch.id) == batch
    with get_engine(state_database_url).connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1
    store.dispose()


def test_schema_matches_metadata(state_database_url: str):
    upgrade(state_database_url)
    with get_engine(state_database_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "version_table": VERSION_TABLE,
            "compare_type": True,
            "compare_server_default": True,
        })
        assert compare_metadata(context, metadata) == []


def test_drift_would_be_detected(state_database_url: str):
    # Guards the test above: a column missing from the database must show up as a diff.
    upgrade(state_database_url)
    extra = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(extra)
    sa.Table("sync_windows", extra, sa.Column("extra_col", sa.Text()), extend_existing=True)
    with get_engine(state_database_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        diffs = compare_metadata(context, extra)
    assert [d[0] for d in diffs] == ["add_column"]
    assert diffs[0][3].name == "extra_col"


def test_store_migrates_lazily_and_after_downgrade(state_database_url: str):
    store = StateStore(database_url=state_database_url)
    assert store.get_blob_integration("p") is None  # first use creates the schema
    assert current_revision(state_database_url) == head_revision()

    with write_tx(get_engine(state_database_url)) as conn:
        command.downgrade(alembic_config(conn), "base")
    assert current_revision(state_database_url) is None
    assert _tables(state_database_url) == {VERSION_TABLE}

    store.dispose()  # a new process would start here: it finds an older schema and upgrades it
    assert store.list_batch_exports() == []
    assert current_revision(state_database_url) == head_revision()
    assert EXPECTED_TABLES <= _tables(state_database_url)
    store.dispose()


def test_concurrent_first_start_from_several_processes(state_database_url: str, tmp_path):
    # What `dagster dev` does on a fresh install: several processes reach the empty database at once.
    # Each process imports, checks in, and waits for the others before migrating, so the attempts overlap.
    code = """
import os, sys, time
import sqlalchemy as sa
from exports_pipeline.state.migrate import current_revision, ensure_schema
url, barrier, me, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(os.path.join(barrier, me), "w").close()
deadline = time.monotonic() + 60
while len(os.listdir(barrier)) < n and time.monotonic() < deadline:
    time.sleep(0.005)
engine = ensure_schema(url)
print(current_revision(url))
with engine.connect() as conn:
    print(conn.execute(sa.text("SELECT count(*) FROM batch_exports")).scalar_one())
"""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    n = 3
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, state_database_url, str(barrier), str(i), str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(n)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert out.split() == [head_revision(), "0"]
    assert current_revision(state_database_url) == head_revision()


def test_sqlite_connections_use_wal_and_busy_timeout(state_database_url: str, backend: str):
    engine = get_engine(state_database_url)
    with engine.connect() as conn:
        if backend == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 10_000
        else:
            assert conn.exec_driver_sql("SHOW server_version").scalar_one().startswith("15")


def test_0002_backfills_where_existing_event_log_rows_live(state_database_url: str):
    """A state DB of revision 0001 with exported objects upgrades in place: rows keep their ids and learn the
    endpoint, region and prefix of the integration that wrote them (the same bucket); others get ''."""
    engine = get_engine(state_database_url)
    with write_tx(engine) as conn:
        command.upgrade(alembic_config(conn), "0001")
    now = "2026-11-01 00:00:00"
    with write_tx(engine) as conn:
        conn.execute(sa.text(
            "INSERT INTO blob_storage_integrations (project_id, type, bucket_name, prefix, region, endpoint, "
            "enabled, export_frequency, created_at, updated_at, file_types, compression, force_path_style, "
            "export_mode, export_source, compressed) VALUES ('p', 'S3_COMPATIBLE', 'bkt', 'pre/', 'eu-west-1', "
            "'https://s3.example.test', true, 'daily', :now, :now, '[\"csv\"]', 'none', false, 'FULL_HISTORY', "
            "'EVENTS', false)"), {"now": now})
        for i, (bucket, key) in enumerate([("bkt", "pre/p/a.csv"), ("bkt", "other/p/b.csv"), ("/dir", "p/c.csv")]):
            conn.execute(sa.text(
                "INSERT INTO event_log (id, bucket_name, bucket_path, project_id, entity_type, entity_id, event_id, "
                "created_at, updated_at) VALUES (:id, :b, :k, 'p', 't', 'e', 'ev', :now, :now)"),
                {"id": f"id{i}", "b": bucket, "k": key, "now": now})
    assert upgrade(state_database_url) == head_revision()
    rows = {e.bucket_path: e for e in StateStore(database_url=state_database_url).list_event_log("p")}
    assert rows["pre/p/a.csv"].id == "id0"
    assert (rows["pre/p/a.csv"].endpoint, rows["pre/p/a.csv"].region, rows["pre/p/a.csv"].prefix) == \
        ("https://s3.example.test", "eu-west-1", "pre/")
    assert (rows["other/p/b.csv"].endpoint, rows["other/p/b.csv"].prefix) == ("https://s3.example.test", "")
    assert (rows["p/c.csv"].endpoint, rows["p/c.csv"].region, rows["p/c.csv"].prefix) == ("", None, "")


def test_0003_keeps_token_rows_and_refuses_to_downgrade_service_accounts(state_database_url: str):
    """A database before 0005 (Mixpanel credentials) with a Mixpanel row (token only) survives the upgrade unchanged; a
    service-account row cannot be represented before it, so the downgrade refuses instead of losing it."""
    from exports_pipeline.crypto import SecretBox, generate_key
    from exports_pipeline.state import MixpanelIntegration

    box = SecretBox(generate_key())
    token = box.encrypt("tok")
    engine = get_engine(state_database_url)
    with write_tx(engine) as conn:
        command.upgrade(alembic_config(conn), "0004")
    with write_tx(engine) as conn:
        conn.execute(sa.text(
            "INSERT INTO mixpanel_integrations (project_id, encrypted_mixpanel_project_token, mixpanel_region, "
            "enabled, created_at, updated_at, export_source) VALUES ('p', :t, 'api-eu', true, :now, :now, 'EVENTS')"),
            {"t": token, "now": "2026-11-01 00:00:00"})
    assert upgrade(state_database_url) == head_revision()
    store = StateStore(database_url=state_database_url)
    row = store.get_mixpanel_integration("p")
    assert (row.encrypted_mixpanel_project_token, row.mixpanel_region, row.endpoint) == (token, "api-eu", None)
    store.upsert_mixpanel_integration(MixpanelIntegration(
        "q", mixpanel_service_account_username="u", encrypted_mixpanel_service_account_secret=box.encrypt("s"),
        mixpanel_project_id="7"))
    store.dispose()
    with pytest.raises(RuntimeError, match="service account"), write_tx(engine) as conn:
        command.downgrade(alembic_config(conn), "0004")
    assert StateStore(database_url=state_database_url).get_mixpanel_integration("q") is not None
