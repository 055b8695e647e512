"""The code location loads, and the deployment files agree with the settings module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from exports_pipeline.settings import ENV_VARS

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "EXPORTS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Validation successful" in out.stdout + out.stderr


def test_definitions_hold_the_promised_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTS_HOME", str(tmp_path))
    from exports_pipeline.definitions import build_definitions
    from exports_pipeline.settings import Settings

    defs = build_definitions(Settings.from_env())
    repo = defs.get_repository_def()
    assets = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"blob_storage_export_hourly", "blob_storage_export_daily", "blob_storage_export_weekly",
            "events_source_profile"} <= assets
    for freq in ("hourly", "daily", "weekly"):
        spec = repo.asset_graph.get(dg_key(f"blob_storage_export_{freq}"))
        assert spec.group_name == "object_storage"
        dims = {d.name: d.partitions_def for d in spec.partitions_def.partitions_defs}
        assert set(dims) == {"date", "project"}
        assert dims["project"].name == f"blob_storage_projects_{freq}"
        assert repo.get_schedule_def(f"blob_storage_export_{freq}_schedule")
    assert repo.get_sensor_def("blob_storage_integrations_sensor")
    late = repo.get_sensor_def("blob_storage_late_rows_sensor")
    assert late.minimum_interval_seconds == 900 and late.default_status.value == "RUNNING"
    assert set(repo.get_top_level_resources()) >= {"clickhouse", "state", "object_store", "mailer"}
    assert repo.get_job("batch_export") and repo.get_job("batch_export_retention")
    requests = repo.get_sensor_def("batch_export_requests_sensor")
    assert requests.default_status.value == "RUNNING"
    assert repo.get_schedule_def("batch_export_retention_schedule").default_status.value == "RUNNING"


def dg_key(name):
    import dagster as dg

    return dg.AssetKey(name)


def test_dagster_yaml_limits_concurrency_per_project_and_sink_and_has_postgres_block():
    from exports_pipeline.definitions import build_definitions

    for path in (ROOT / "dagster.yaml", ROOT / "docker" / "dagster.yaml"):
        text = path.read_text()
        conf = yaml.safe_load(text)
        limits = {item["key"]: item for item in conf["concurrency"]["runs"]["tag_concurrency_limits"]}
        assert limits["dagster/partition/project"] == {"key": "dagster/partition/project", "limit": 1,
                                                       "value": {"applyLimitPerUniqueValue": True}}, path
        assert limits["exports/sink"] == {"key": "exports/sink", "limit": 2,
                                          "value": {"applyLimitPerUniqueValue": True}}, path
        # the tags those limits read are completed for hand-launched runs by our coordinator
        assert conf["run_coordinator"] == {"module": "exports_pipeline.run_coordinator",
                                           "class": "ExportsRunCoordinator"}, path
        # and a pool per sink, counted in runs, holds whatever tags a run has
        assert conf["concurrency"]["pools"] == {"granularity": "run", "default_limit": 2}, path
    assert "scheme: postgresql+psycopg2" in (ROOT / "dagster.yaml").read_text()  # the commented production block
    # Dagster's own schema accepts both (the compose one is otherwise only read inside its containers)
    from dagster._core.instance.config import dagster_instance_config

    for folder in (ROOT, ROOT / "docker"):
        config, _ = dagster_instance_config(str(folder))
        assert config["concurrency"]["pools"]["granularity"] == "run"
    graph = build_definitions().resolve_asset_graph()
    for freq in ("hourly", "daily", "weekly"):
        assert graph.get(dg_key(f"blob_storage_export_{freq}")).pools == {"object_storage"}


def test_compose_sets_every_setting_for_code_server_and_daemon():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"clickhouse", "postgres", "minio", "minio-bucket", "dagster-webserver", "dagster-daemon",
            "dagster-code"} <= set(services)
    for name in ("dagster-code", "dagster-daemon"):
        env = services[name]["environment"]
        missing = [v for v in ENV_VARS if v not in env]
        assert missing == [], f"{name} lacks {missing}"
        assert env["EXPORTS_CLICKHOUSE_URL"].startswith("http://")
        assert env["EXPORTS_DATABASE_URL"].startswith("postgresql+psycopg2://")
    assert "mc mb" in services["minio-bucket"]["entrypoint"]
