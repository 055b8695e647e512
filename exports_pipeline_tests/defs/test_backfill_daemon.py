"""Backfills launched the way the Dagster UI launches them, run by the daemon under the shipped dagster.yaml.

Real processes, nothing mocked: `dagster-webserver` and `dagster-daemon run` over `workspace.yaml` (as the
webserver and daemon containers of docker-compose.yml run), DAGSTER_HOME holding a copy of the repository's
`dagster.yaml` (queued run coordinator with its pool and tag concurrency limits, run monitoring, run retries), the
pipeline's state in SQLite with LOCAL integrations, and ClickHouse reached over its HTTP interface: the
session's chDB served by the `chdb_http` shim, because chDB lets one process at a time open its directory.

The webserver starts first. Before any daemon exists, the sensors and the daily schedule are
stopped through GraphQL (on today's date both would request windows of these projects on their own and race
the backfills), the project partitions are added as the UI adds them, and two backfills are launched with
the mutation the UI sends: one from the asset page (an asset selection), one from the job's partitions page
(the job's partition set). Then the daemon starts and runs them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

from exports_pipeline_tests.conftest import free_port
from exports_pipeline_tests.defs.daemon_harness import (
    ADD_PARTITION,
    BACKFILL,
    BIN,
    LAUNCH_BACKFILL,
    LAUNCH_RUN,
    REPOSITORY,
    ROOT,
    RUN_TERMINAL,
    RUNS,
    LOCATION,
    DagsterProcesses,
    deployment,
    GraphQL,
    run_logs,
    stop_instigators,
    wait_for_location,
)
from exports_pipeline_tests.defs.harness import over_http

ASSET = "blob_storage_export_daily"
ASSET_ROUTE = ("2026-11-02|proj-1", "2026-11-03|proj-1")  # backfilled from the asset page
JOB_ROUTE = ("2026-11-02|proj-2",)  # backfilled from the job's partitions page
AD_HOC = "2026-11-03|proj-2"  # one partition launched by hand from the asset page
BACKFILL_TIMEOUT_SECONDS = 240
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def window_of(partition_key: str) -> tuple[dt.datetime, dt.datetime]:
    day = dt.datetime.strptime(partition_key.split("|")[0], "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return day, day + dt.timedelta(days=1)


def window_dir(out: Path, partition_key: str) -> Path:
    start, end = window_of(partition_key)
    project = partition_key.split("|")[1]
    return out / project / "events" / "daily" / f"{start:%Y-%m-%dT%H-%M-%SZ}_{end:%Y-%m-%dT%H-%M-%SZ}"


# -------------------------------------------------------------------------------------------------- test


def test_ui_backfills_run_through_the_daemon_under_the_shipped_dagster_yaml(seeded, chdb_http, tmp_path):
    env, out = deployment(tmp_path, over_http(seeded, chdb_http).url, seeded.events_table, ("proj-1", "proj-2"))
    repo = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}
    # The UI's two ways to backfill: the asset page's "Materialize" dialog (an asset selection), and the
    # job's Partitions tab (the job's partition set).
    launches = {
        "asset": {"assetSelection": [{"path": [ASSET]}], "partitionNames": list(ASSET_ROUTE)},
        "job": {"selector": {"partitionSetName": f"{ASSET}_job_partition_set", "repositorySelector": repo},
                "partitionNames": list(JOB_ROUTE)},
    }
    # The sink's pool limit, set as an operator sets one pool's limit (the shipped default_limit only takes
    # hold after the queue's first pass over a run of a new pool; see README "Concurrency"). With 1, the
    # runs of two projects, free of each other under the per-project limit, must run one after the other.
    subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "object_storage", "1"], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=120)
    procs = DagsterProcesses(env, tmp_path)
    try:  # on any failure, the processes' logs (the run workers log into the daemon's) are printed
        runs, backfills, backfill_ids = run_backfills(procs, launches, repo)
        check_runs_and_files(runs, backfills, backfill_ids, seeded, out)
    except BaseException:
        print(procs.logs())
        raise


def run_backfills(procs: DagsterProcesses, launches: dict, repo: dict) -> tuple[list, dict, dict]:
    """Webserver up, instigators stopped, partitions added, backfills launched; then the daemon runs them."""
    port = free_port()
    gql = GraphQL(port)
    started = time.monotonic()
    try:
        procs.start("webserver", "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port))
        wait_for_location(gql, procs)
        stop_instigators(gql, (f"{ASSET}_schedule",))
        for project in ("proj-1", "proj-2"):
            added = gql(ADD_PARTITION, repo=repo, name="blob_storage_projects_daily", key=project)["addDynamicPartition"]
            assert added == {"__typename": "AddDynamicPartitionSuccess", "partitionKey": project}, added
        backfill_ids = {}
        for route, params in launches.items():
            launched = gql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            backfill_ids[route] = launched["backfillId"]
        launched = gql(LAUNCH_RUN, params={
            "selector": {**repo, "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [ASSET]}],
                         "assetCheckSelection": [{"assetKey": {"path": [ASSET]},
                                                  "name": "manifest_row_count_matches_source"}]},
            "mode": "default", "runConfigData": {},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": AD_HOC}]},
        })["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        ready = time.monotonic()

        # Started after the launch: the backfill daemon looks for work every 30 s, beginning at its start.
        procs.start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")
        deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
        while True:
            procs.check_alive()
            backfills = {route: gql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
                         for route, backfill_id in backfill_ids.items()}
            assert all(b["__typename"] == "PartitionBackfill" for b in backfills.values()), backfills
            runs = gql(RUNS)["runsOrError"]["results"]
            if (all(b["status"] in TERMINAL for b in backfills.values())
                    and all(r["status"] in RUN_TERMINAL for r in runs)):
                break
            assert time.monotonic() < deadline, (
                f"backfills and runs not finished after {BACKFILL_TIMEOUT_SECONDS} s: "
                f"{ {route: b['status'] for route, b in backfills.items()} } {[r['status'] for r in runs]}")
            time.sleep(1)

        runs = gql(RUNS)["runsOrError"]["results"]
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        assert all(b["status"] in ("COMPLETED", "COMPLETED_SUCCESS") for b in backfills.values()) and not failed, (
            f"backfills {backfills}\nruns {[(r['runId'], r['status']) for r in runs]}\n"
            + "\n".join(f"----- run {r['runId']}\n{run_logs(gql, r['runId'])}" for r in failed)
        )
        print(f"webserver ready and backfills launched after {ready - started:.1f} s; "
              f"backfills completed {time.monotonic() - ready:.1f} s after the daemon started")
        return runs, backfills, backfill_ids
    finally:
        procs.stop()


def check_runs_and_files(runs: list, backfills: dict, backfill_ids: dict, seeded, out: Path) -> None:
    # Every run of the instance belongs to one of the backfills (the sensor and schedule were stopped), one
    # run per partition, each tagged with its partition's project (the per-project limit of dagster.yaml).
    tags = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]} for r in runs}
    for route, partitions in (("asset", ASSET_ROUTE), ("job", JOB_ROUTE)):
        assert sorted(backfills[route]["partitionNames"]) == sorted(partitions)
        mine = [t for t in tags.values() if t.get("dagster/backfill") == backfill_ids[route]]
        assert sorted(t["dagster/partition"] for t in mine) == sorted(partitions)
        for run_tags in mine:
            assert run_tags["dagster/partition/project"] == run_tags["dagster/partition"].split("|")[1]
            # the job's tag on the job route; added by ExportsRunCoordinator on the asset route, whose runs
            # get no job tags (dagster-io/dagster#15752)
            assert run_tags["exports/sink"] == "object_storage", run_tags
    (ad_hoc,) = [t for t in tags.values() if "dagster/backfill" not in t]
    # The UI tags a hand-launched run with the partition key only; ExportsRunCoordinator (dagster.yaml) adds
    # the project and sink tags before it queues, so the per-project and per-sink limits see it too.
    assert ad_hoc["dagster/partition"] == AD_HOC
    assert ad_hoc["dagster/partition/project"] == "proj-2" and ad_hoc["dagster/partition/date"] == "2026-11-03"
    assert ad_hoc["exports/sink"] == "object_storage"
    assert len(runs) == len(ASSET_ROUTE) + len(JOB_ROUTE) + 1
    # The sink's pool (limit 1 here) held for every route alike: no two of the four runs overlapped,
    # although the two projects' runs were free of each other under the per-project limit.
    ordered = sorted(runs, key=lambda r: r["startTime"])
    for before, after in zip(ordered, ordered[1:]):
        assert after["startTime"] >= before["endTime"], (before, after)

    # Each backfilled window is committed by its manifest; its row count is ClickHouse's FINAL count (the
    # Dagster processes are gone, so the test process may open the engine again), and every file it lists
    # is there with the listed size. Nothing else was written: no other window, no other project.
    expected_files = set()
    for key in ASSET_ROUTE + JOB_ROUTE + (AD_HOC,):
        folder = window_dir(out, key)
        manifest = json.loads((folder / "manifest.json").read_text())
        start, end = window_of(key)
        (count,) = seeded.query(
            f"SELECT count() FROM {seeded.events_table} FINAL WHERE project_id = {{p:String}} "
            "AND start_time >= {s:DateTime64(6, 'UTC')} AND start_time < {e:DateTime64(6, 'UTC')} AND is_deleted = 0",
            {"p": key.split("|")[1], "s": start, "e": end},
        )[0]
        assert manifest["source"]["row_count"] == count > 0
        assert manifest["formats"] == ["csv", "parquet"]
        for fmt in manifest["formats"]:
            assert sum(f["row_count"] for f in manifest["files"] if f["format"] == fmt) == count
        expected_files.add(folder / "manifest.json")
        for f in manifest["files"]:
            path = out / f["key"]
            assert path.stat().st_size == f["bytes"], f
            expected_files.add(path)
    written = {p for p in out.rglob("*") if p.is_file()}
    assert written == expected_files
