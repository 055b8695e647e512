"""A partition run whose process dies mid-export is run again by Dagster, and the window ends exported.

Real processes under the shipped dagster.yaml (`run_retries`: runs whose process died are run again, runs
failed by a step are not), as in `test_backfill_daemon.py`. The code location is the shipped one, loaded
through `killed_worker_location`, whose run worker and step are SIGKILLed in the first engine write. No step
fails and no RetryPolicy can act: Dagster's code server finds the run's process gone and fails the run, and
the daemon's run retries launch it again; without them the window stays unexported and only a failed run
says so.
"""

from __future__ import annotations

import datetime as dt
import json
import time

from exports_pipeline_tests.conftest import free_port
from exports_pipeline_tests.defs.daemon_harness import (
    ADD_PARTITION,
    LAUNCH_RUN,
    LOCATION,
    REPOSITORY,
    ROOT,
    RUN_TERMINAL,
    RUNS,
    DagsterProcesses,
    deployment,
    GraphQL,
    run_logs,
    stop_instigators,
    wait_for_location,
)
from exports_pipeline_tests.defs.harness import over_http

ASSET = "blob_storage_export_daily"
PARTITION = "2026-11-02|proj-1"
FOLDER = "proj-1/events/daily/2026-11-02T00-00-00Z_2026-11-03T00-00-00Z"
RETRY_WAIT_SECONDS = 120  # after the dead run failed: the daemon's run retries look every few seconds
TIMEOUT_SECONDS = 300
WORKSPACE = f"""load_from:
  - python_module:
      module_name: exports_pipeline_tests.defs.killed_worker_location
      location_name: {LOCATION}
      working_directory: {ROOT}
"""


def test_a_run_whose_process_died_is_run_again_and_exports_the_window(seeded, chdb_http, tmp_path):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(WORKSPACE)
    marker = tmp_path / "killed"
    env, out = deployment(tmp_path, over_http(seeded, chdb_http).url, seeded.events_table, ("proj-1",),
                          EXPORTS_TEST_KILL_MARKER=str(marker), PYTHONPATH=str(ROOT))
    procs = DagsterProcesses(env, tmp_path)
    try:
        runs, gql_logs = launch_and_wait(procs, str(workspace))
    except BaseException:
        print(procs.logs())
        raise

    # The first run's process died in the engine write (the marker holds its pid); Dagster failed that run
    # and launched it again, and the second run, a re-execution of the first, exported the window.
    assert marker.exists(), "the run worker never reached the engine write"
    first, *retries = sorted(runs, key=lambda r: r["startTime"] or 0)
    tags = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]} for r in runs}
    assert first["status"] == "FAILURE", gql_logs
    assert [r["status"] for r in retries] == ["SUCCESS"], gql_logs
    assert tags[retries[0]["runId"]]["dagster/parent_run_id"] == first["runId"]
    assert tags[retries[0]["runId"]]["dagster/partition"] == PARTITION
    assert tags[retries[0]["runId"]]["dagster/partition/project"] == "proj-1"  # held by the per-project limit

    # The window is whole: its manifest counts ClickHouse's rows, every listed file is there with its size,
    # and nothing else is (the dead run's scratch and temporary files were cleared by the retry).
    manifest = json.loads((out / FOLDER / "manifest.json").read_text())
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    (count,) = seeded.query(
        f"SELECT count() FROM {seeded.events_table} FINAL WHERE project_id = 'proj-1' AND is_deleted = 0 "
        "AND start_time >= {s:DateTime64(6, 'UTC')} AND start_time < {e:DateTime64(6, 'UTC')}",
        {"s": start, "e": start + dt.timedelta(days=1)})[0]
    assert manifest["source"]["row_count"] == count > 0
    for fmt in ("csv", "parquet"):
        assert sum(f["row_count"] for f in manifest["files"] if f["format"] == fmt) == count
    expected = {out / FOLDER / "manifest.json"} | {out / f["key"] for f in manifest["files"]}
    for f in manifest["files"]:
        assert (out / f["key"]).stat().st_size == f["bytes"], f
    assert {p for p in out.rglob("*") if p.is_file()} == expected


def launch_and_wait(procs: DagsterProcesses, workspace: str) -> tuple[list[dict], str]:
    """Webserver up, instigators stopped, the partition launched as the asset page launches one; the daemon
    then runs it (and, when its process dies, runs it again). Returns the runs and their logs."""
    port = free_port()
    gql = GraphQL(port)
    repo = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}
    try:
        procs.start("webserver", "dagster-webserver", "-w", workspace, "-h", "127.0.0.1", "-p", str(port))
        wait_for_location(gql, procs)
        stop_instigators(gql, (f"{ASSET}_schedule",))
        added = gql(ADD_PARTITION, repo=repo, name="blob_storage_projects_daily", key="proj-1")["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added
        launched = gql(LAUNCH_RUN, params={
            "selector": {**repo, "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [ASSET]}]},
            "mode": "default", "runConfigData": {},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION}]},
        })["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        procs.start("daemon", "dagster-daemon", "run", "-w", workspace)
        deadline, failed_at = time.monotonic() + TIMEOUT_SECONDS, None
        while True:
            procs.check_alive()
            runs = gql(RUNS)["runsOrError"]["results"]
            finished = all(r["status"] in RUN_TERMINAL for r in runs)
            if finished and any(r["status"] == "SUCCESS" for r in runs):
                break
            if finished and failed_at is None:
                failed_at = time.monotonic()
            elif not finished:
                failed_at = None
            if failed_at is not None and time.monotonic() - failed_at > RETRY_WAIT_SECONDS:
                raise AssertionError(f"every run failed and none was launched again within {RETRY_WAIT_SECONDS} s:"
                                     f"\n{describe(gql, runs)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not finished after {TIMEOUT_SECONDS} s:\n{describe(gql, runs)}")
            time.sleep(1)
        return runs, describe(gql, runs)
    finally:
        procs.stop()


def describe(gql: GraphQL, runs: list[dict]) -> str:
    return "\n".join(f"----- run {r['runId']} {r['status']}\n{run_logs(gql, r['runId'])}" for r in runs)


def test_the_batch_export_job_opts_out_of_run_retries():
    """A batch export's request row belongs to its run; a re-execution could not claim it, so the job is
    never run again by Dagster (its sensor settles the row FAILED, naming the dead run)."""
    from exports_pipeline.definitions import defs

    assert defs.resolve_job_def("batch_export").tags["dagster/max_retries"] == "0"
    assert "dagster/max_retries" not in defs.resolve_job_def(f"{ASSET}_job").tags
