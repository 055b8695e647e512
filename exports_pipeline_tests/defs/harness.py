"""The object-storage Dagster definitions over a real ClickHouse, a SQLite state DB, a local bucket
directory and a throwaway Dagster instance, shared by the defs tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

from exports_pipeline.engine import assets as blob_storage
from exports_pipeline.sinks.object_storage.defs import build_blob_storage_defs
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.state.models import BlobIntegration
from exports_pipeline.state.store import StateStore

START = "2026-10-01"  # first time partition: the seeded days (Nov 2026) are well inside


@contextlib.contextmanager
def export_env(clickhouse: ClickHouseResource, tmp_path, **blob_kwargs) -> Iterator[dict]:
    """defs, state, instance, out (the bucket directory) and resources; 5 MiB parts, fast retries."""
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    blob = build_blob_storage_defs(START, settle_minutes=15, **blob_kwargs)
    resources = {"clickhouse": clickhouse, "state": state,
                 "object_store": ObjectStoreResource(min_part_size_mb=5, default_part_size_mb=5,
                                                     backoff_base_seconds=0.01, backoff_max_seconds=0.05)}
    defs = dg.Definitions(assets=blob["assets"], jobs=blob["jobs"], schedules=blob["schedules"],
                          sensors=blob["sensors"], resources=resources)
    out = tmp_path / "bucket"
    out.mkdir()
    with dg.instance_for_test() as instance:
        yield {"defs": defs, "state": state, "instance": instance, "out": out, "resources": resources}


def over_http(clickhouse: ClickHouseResource, chdb_http) -> ClickHouseResource:
    """The same events table through the ClickHouse HTTP interface shim (the `chdb_http` fixture)."""
    database = clickhouse.events_table.split(".")[0]
    return ClickHouseResource(url=f"http://default:pw@127.0.0.1:{chdb_http.port}/{database}?compress=false",
                              events_table=clickhouse.events_table)


def shorten_step_retries(monkeypatch, delay: float) -> dg.RetryPolicy:
    """The shipped step RetryPolicy (its retries, backoff and jitter) with a shorter base delay than 10 s:
    the same decisions, sooner. Patched before the asset is built (export_env, export_asset), which reads it."""
    shipped = blob_storage.RETRY_POLICY
    policy = dg.RetryPolicy(max_retries=shipped.max_retries, delay=delay, backoff=shipped.backoff,
                            jitter=shipped.jitter)
    monkeypatch.setattr(blob_storage, "RETRY_POLICY", policy)
    return policy


def export_asset(frequency: str = "daily") -> dg.AssetsDefinition:
    return next(a for a in build_blob_storage_defs(START, 15)["assets"]
                if a.key.path == [f"blob_storage_export_{frequency}"])


def add_local(env: dict, project: str = "proj-1", frequency: str = "daily", *,
              file_types: tuple[str, ...] = ("jsonl", "parquet"), bucket_name: str | None = None,
              **kw) -> BlobIntegration:
    """A LOCAL integration into env["out"] (or `bucket_name`), with its project in the dimension."""
    integ = BlobIntegration(project_id=project, type="LOCAL", bucket_name=bucket_name or str(env["out"]),
                            export_frequency=frequency, file_types=file_types, **kw)
    env["state"].upsert_blob_integration(integ)
    env["instance"].add_dynamic_partitions(f"blob_storage_projects_{frequency}", [project])
    return integ
