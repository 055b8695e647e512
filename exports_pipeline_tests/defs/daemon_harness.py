"""Real Dagster processes for the daemon-driven tests: `dagster-webserver` and `dagster-daemon run` over a
workspace file, each in its own process group, and the GraphQL calls the UI makes."""

from __future__ import annotations

import contextlib
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

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "exports_pipeline"  # workspace.yaml
REPOSITORY = "__repository__"  # a Definitions object's repository
RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def deployment(tmp_path: Path, clickhouse_url: str, events_table: str, projects: tuple[str, ...],
               **extra_env: str) -> tuple[dict[str, str], Path]:
    """What the Dagster processes of a deployment see: DAGSTER_HOME holding the repository's dagster.yaml,
    an EXPORTS_HOME, SQLite state with a daily LOCAL integration (CSV and Parquet) per project into
    `tmp_path/bucket`, and ClickHouse at `clickhouse_url` (over HTTP: chDB lets one process at a time open
    its directory). Returns the processes' environment (the test's own EXPORTS_/DAGSTER_ variables
    removed, `extra_env` added) and the bucket directory."""
    out, exports_home, dagster_home = tmp_path / "bucket", tmp_path / "exports-home", tmp_path / "dagster-home"
    for directory in (out, exports_home, dagster_home):
        directory.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    state = StateStore(database_url=state_url)
    for project in projects:
        state.upsert_blob_integration(BlobIntegration(project_id=project, type="LOCAL", bucket_name=str(out),
                                                      export_frequency="daily", file_types=("csv", "parquet")))
    state.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_"))}
    env.update(EXPORTS_HOME=str(exports_home), EXPORTS_CLICKHOUSE_URL=clickhouse_url,
               EXPORTS_EVENTS_TABLE=events_table, EXPORTS_DATABASE_URL=state_url,
               ENCRYPTION_KEY=secrets.token_hex(32), DAGSTER_HOME=str(dagster_home), **extra_env)
    return env, out


# ------------------------------------------------------------------------------------ processes, GraphQL


class DagsterProcesses:
    """Each process in its own session, so its whole tree (code servers, run workers) is one group."""

    def __init__(self, env: dict[str, str], log_dir: Path, cwd: Path = ROOT):
        self.env, self.log_dir, self.cwd = env, log_dir, cwd
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, *argv: str) -> None:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
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


def stop_instigators(gql: GraphQL, schedules: tuple[str, ...]) -> None:
    """Stop the object-storage sensors and `schedules` before a daemon exists: on today's date they would
    request windows of the test's projects on their own and race what the test launches."""
    repo = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}
    for name in ("blob_storage_integrations_sensor", "blob_storage_late_rows_sensor"):
        sensor = gql(SENSOR, selector={**repo, "sensorName": name})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        stopped = gql(STOP_SENSOR, id=sensor["id"])["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED", stopped
    for name in schedules:
        schedule = gql(SCHEDULE, selector={**repo, "scheduleName": name})["scheduleOrError"]
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
