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

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from exports_pipeline.state.models import BlobIntegration
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.conftest import free_port
from exports_pipeline_tests.defs.harness import over_http

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "exports_pipeline"  # workspace.yaml
REPOSITORY = "__repository__"  # a Definitions object's repository
ASSET = "blob_storage_export_daily"
ASSET_ROUTE = ("2026-11-02|proj-1", "2026-11-03|proj-1")  # backfilled from the asset page
JOB_ROUTE = ("2026-11-02|proj-2",)  # backfilled from the job's partitions page
AD_HOC = "2026-11-03|proj-2"  # one partition launched by hand from the asset page
BACKFILL_TIMEOUT_SECONDS = 240
RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def window_of(partition_key: str) -> tuple[dt.datetime, dt.datetime]:
    day = dt.datetime.strptime(partition_key.split("|")[0], "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return day, day + dt.timedelta(days=1)


def window_dir(out: Path, partition_key: str) -> Path:
    start, end = window_of(partition_key)
    project = partition_key.split("|")[1]
    return out / project / "events" / "daily" / f"{start:%Y-%m-%dT%H-%M-%SZ}_{end:%Y-%m-%dT%H-%M-%SZ}"


# ------------------------------------------------------------------------------------ processes, GraphQL


class DagsterProcesses:
    """Each process in its own session, so its whole tree (code servers, run workers) is one group."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, *argv: str) -> None:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((name, proc, log))

    def check_alive(self) -> None:
        for name, proc, log in self.started:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with code {proc.returncode}:\n{tail(log)}")

    def stop(self) -> None:
        """SIGTERM every group (daemon first, so it launches nothing more), then SIGKILL what is left."""
        for _name, proc, _log in reversed(self.started):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, proc, _log in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):  # the SIGKILL below ends it
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _name, proc, _log in self.started:  # stragglers of the group, even when its leader exited
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"===== {name} (exit {proc.poll()}) =====\n{tail(log)}" for name, proc, log in self.started)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(pgid, sig)


def tail(path: Path, chars: int = 15000) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return text[-chars:]


class GraphQL:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def __call__(self, query: str, **variables) -> dict:
        request = urllib.request.Request(self.url, data=json.dumps({"query": query, "variables": variables}).encode(),
                                         headers={"Content-Type": "application/json"})
        with self._opener.open(request, timeout=60) as response:
            body = json.load(response)
        assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
        return body["data"]


WORKSPACE = """{ workspaceOrError { __typename
  ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message stack } } } }
  ... on PythonError { message } } }"""

SENSOR = """query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { id sensorState { status } } ... on Error { message } } }"""
STOP_SENSOR = """mutation ($id: String) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on Error { message } } }"""

SCHEDULE = """query ($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) { __typename
  ... on Schedule { id scheduleState { status } } ... on Error { message } } }"""
STOP_SCHEDULE = """mutation ($id: String) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on Error { message } } }"""

ADD_PARTITION = """mutation ($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) { __typename
    ... on AddDynamicPartitionSuccess { partitionKey } ... on Error { message } } }"""

# What the UI's "Materialize" -> partitions dialog sends for an asset selection.
LAUNCH_BACKFILL = """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } ... on Error { message } } }"""

# What the asset page sends for one partition: a run of the asset selection tagged with the partition key.
LAUNCH_RUN = """mutation ($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack } ... on Error { message } } }"""

BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status partitionNames numPartitions error { message stack } }
  ... on Error { message } } }"""

RUNS = """{ runsOrError { __typename ... on Runs { results {
  runId status jobName startTime endTime tags { key value } } } ... on Error { message } } }"""

RUN_LOGS = """query ($runId: ID!) { logsForRun(runId: $runId) { __typename ... on EventConnection { events {
  __typename ... on MessageEvent { message stepKey }
  ... on ExecutionStepFailureEvent { error { message stack } } ... on RunFailureEvent { error { message stack } } } }
  ... on Error { message } } }"""


def wait_for_location(gql: GraphQL, procs: DagsterProcesses, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            data = gql(WORKSPACE)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(0.5)
            continue
        entries = {e["name"]: e for e in data.get("locationEntries", [])}
        entry = entries.get(LOCATION)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded and loaded["__typename"] == "RepositoryLocation", f"code location failed to load: {loaded}"
            return
        last = data
        time.sleep(0.5)
    raise AssertionError(f"the webserver did not serve location {LOCATION} within {timeout} s (last: {last})")


def stop_instigators(gql: GraphQL) -> None:
    repo = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}
    for name in ("blob_storage_integrations_sensor", "blob_storage_late_rows_sensor"):
        sensor = gql(SENSOR, selector={**repo, "sensorName": name})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        stopped = gql(STOP_SENSOR, id=sensor["id"])["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED", stopped
    schedule = gql(SCHEDULE, selector={**repo, "scheduleName": f"{ASSET}_schedule"})["scheduleOrError"]
    assert schedule["__typename"] == "Schedule", schedule
    stopped = gql(STOP_SCHEDULE, id=schedule["id"])["stopRunningSchedule"]
    assert stopped["scheduleState"]["status"] == "STOPPED", stopped


def run_logs(gql: GraphQL, run_id: str) -> str:
    data = gql(RUN_LOGS, runId=run_id)["logsForRun"]
    lines = []
    for event in data.get("events", []):
        if event.get("error"):
            lines.append(f"{event['__typename']}: {event['error']['message']}\n{''.join(event['error']['stack'])}")
        elif event.get("message"):
            lines.append(f"{event['__typename']} [{event.get('stepKey') or '-'}] {event['message']}")
    return "\n".join(lines)[-15000:]


# -------------------------------------------------------------------------------------------------- test


def test_ui_backfills_run_through_the_daemon_under_the_shipped_dagster_yaml(seeded, chdb_http, tmp_path):
    out = tmp_path / "bucket"
    out.mkdir()
    exports_home = tmp_path / "exports-home"
    exports_home.mkdir()
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    state = StateStore(database_url=state_url)
    for project in ("proj-1", "proj-2"):
        state.upsert_blob_integration(BlobIntegration(project_id=project, type="LOCAL", bucket_name=str(out),
                                                      export_frequency="daily", file_types=("csv", "parquet")))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_"))}
    env.update(
        EXPORTS_HOME=str(exports_home),
        EXPORTS_CLICKHOUSE_URL=over_http(seeded, chdb_http).url,
        EXPORTS_EVENTS_TABLE=seeded.events_table,
        EXPORTS_DATABASE_URL=state_url,
        ENCRYPTION_KEY=secrets.token_hex(32),
        DAGSTER_HOME=str(dagster_home),
    )
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
        stop_instigators(gql)
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
