"""Export one window in a process of its own and SIGKILL it at a chosen step: the crash-safety tests' fault.

    python -m exports_pipeline_tests.export.kill_runner '<json config>'

The config names the state DB, the ClickHouse URL (HTTP: this process must not open the test's chDB), the
partition, and the step: `{"target": "module:Class.method", "nth": N, "when": "before"|"after"}`. The
process dies, exactly as a killed run worker does, when that method is entered or left for the Nth time,
whichever thread calls it. Exit status 0 means the step was never reached (the test treats it as a failure).
"""

from __future__ import annotations

import datetime as dt
import importlib
import itertools
import json
import os
import signal
import sys
import threading

from exports_pipeline.crypto import SecretBox
from exports_pipeline.sinks.object_storage.plugin import export_partition
from exports_pipeline.windows import Window
from exports_pipeline.resources.clickhouse import ClickHouseResource
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.state.store import StateStore


def arm(target: str, nth: int, when: str) -> None:
    module_name, attr = target.split(":")
    cls_name, method_name = attr.split(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    original = getattr(cls, method_name)
    calls = itertools.count(1)
    lock = threading.Lock()

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def wrapper(*args, **kwargs):
        with lock:
            n = next(calls)
        if when == "before" and n == nth:
            die()
        result = original(*args, **kwargs)
        if when == "after" and n == nth:
            die()
        return result

    setattr(cls, method_name, wrapper)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    arm(cfg["kill"]["target"], cfg["kill"]["nth"], cfg["kill"]["when"])
    window = Window(dt.datetime.fromisoformat(cfg["start"]), dt.datetime.fromisoformat(cfg["end"]))
    export_partition(
        clickhouse=ClickHouseResource(url=cfg["clickhouse_url"], events_table=cfg["events_table"]),
        object_store=ObjectStoreResource(min_part_size_mb=5, default_part_size_mb=5, backoff_base_seconds=0.01),
        state=StateStore(database_url=cfg["database_url"]), box=SecretBox(cfg["key"]),
        frequency=cfg["frequency"], project_id=cfg["project"], window=window,
        partition_key=cfg["partition"], run_id="killed-run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
