"""What makes one windowed sink different from another, behind one interface.

Object storage, PostHog and Mixpanel all deliver a project's events window by window: the engine
(`runner`, `assets`, `history`, `late_rows`, `partitions`) does everything they share the same way -
load and check the integration, deliver, sort faults, record the window, advance the cursor, plan
history, re-deliver windows whose source changed, build the Dagster objects. A sink plug-in says only:

- which integrations it has (its state rows) and how they are switched off, flagged and marked synced;
- how it delivers one span of one project's events (`deliver`), raising the faults of `errors.py`;
- what it has delivered for a window (`recorded_states`): a manifest for object storage, the delivery
  records in the state DB (`sync_windows`) for an API sink;
- its names. Names that Dagster or the state DB persist (asset keys, dynamic partition names, cursor
  sink names, sensor and schedule names) are spelled by the plug-in and never derived anew.

A new sink is one folder `sinks/<sink>/` with a plug-in class and a `defs.py` that hands it to
`engine.definitions.sink_definitions`.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exports_pipeline.events.queries import WINDOW_FILTER, first_event_sql, qualified_table
from exports_pipeline.resources.clickhouse import query_tags
from exports_pipeline.windows import Window, iso, window_floor


@dataclass(frozen=True)
class WindowState:
    """Latest-version rows of a window and their max(event_ts) (ISO), as delivered or as in ClickHouse."""

    rows: int
    max_event_ts: str | None


EMPTY = WindowState(0, None)


@dataclass(frozen=True)
class WindowJob:
    """One run's work: `span` of the partition's `window` for one project (the whole window unless the
    sink delivers the current window hour by hour)."""

    project_id: str
    frequency: str
    window: Window
    span: Window
    partition_key: str
    run_id: str
    integration: Any
    log: Callable[[str], None] = lambda _m: None


@dataclass
class Delivered:
    """What `deliver` did. `rows`/`max_event_ts` describe the source span delivered (the row-count check
    compares `rows` with ClickHouse); `consistent` is the sink's own cross-check (e.g. every format's file
    rows equal `rows`), `metadata` goes to the materialization and `check_metadata` to the check."""

    rows: int
    max_event_ts: str | None
    seconds: float
    uri: str | None = None
    consistent: bool = True
    metadata: dict = field(default_factory=dict)
    check_metadata: dict = field(default_factory=dict)
    result: Any = None  # the sink's own result object, for callers that want more

    @property
    def state(self) -> WindowState:
        return WindowState(self.rows, self.max_event_ts)


class WindowedSink(abc.ABC):
    """One sink's plug-in. Class attributes are its names; methods its behaviour."""

    name: str  # the sink: pool, `exports/sink` tag, cursor family
    label: str  # "object-storage", "PostHog": in messages
    group: str  # Dagster asset group
    kinds: frozenset[str] = frozenset()
    frequencies: tuple[str, ...]
    check_name: str
    check_description: str
    resource_keys: tuple[str, ...] = ()  # resources `deliver` needs besides clickhouse and state
    recorded_resource_keys: tuple[str, ...] = ()  # those `recorded_states` needs (the late-rows sensor's)
    # API sinks: the newest window is a partition already, and each run sends what settled since the last
    # one (delivery records say how far); a run of a window delivered whole sends it whole again.
    continues_open_window: bool = False
    # API sinks record what they delivered in the state DB; object storage has its manifests.
    records_deliveries: bool = True

    # ------------------------------------------------------------------------------------- names

    @abc.abstractmethod
    def asset_name(self, frequency: str) -> str: ...

    @abc.abstractmethod
    def projects_dimension(self, frequency: str) -> str:
        """The dynamic partitions definition of the project dimension (persisted by Dagster)."""

    @abc.abstractmethod
    def cursor_sink(self, frequency: str) -> str:
        """The `sync_cursors.sink` of this sink and frequency (persisted)."""

    def asset_description(self, frequency: str) -> str:
        return f"Langfuse events of one project and one {frequency} window, delivered to {self.label}."

    def job_name(self, frequency: str) -> str:
        return f"{self.asset_name(frequency)}_job"

    def schedule_name(self, frequency: str) -> str:
        return f"{self.asset_name(frequency)}_schedule"

    @property
    def history_sensor_name(self) -> str:
        return f"{self.name}_integrations_sensor"

    @property
    def late_rows_sensor_name(self) -> str:
        return f"{self.name}_late_rows_sensor"

    # ------------------------------------------------------------------------------ integrations

    @abc.abstractmethod
    def get_integration(self, state, project_id: str) -> Any | None: ...

    @abc.abstractmethod
    def list_enabled(self, state, frequency: str) -> list: ...

    @abc.abstractmethod
    def frequency_of(self, integration) -> str: ...

    def plan_id(self, integration) -> str:
        """Identifies an integration's history plan; when it changes, history is planned again."""
        return "full"

    def starts_at(self, integration) -> dt.datetime | None:
        """A configured start (FROM_TODAY / FROM_CUSTOM_DATE), None for the project's first event."""
        return None

    def history_start(self, integration, clickhouse) -> dt.datetime | None:
        """Where this integration's history begins, floored to a window: the configured start, else the
        project's first event (None while the project has none, never the epoch)."""
        frequency = self.frequency_of(integration)
        configured = self.starts_at(integration)
        if configured is not None:
            return window_floor(configured, frequency)
        first = first_event_at(clickhouse, integration.project_id)
        return window_floor(first, frequency) if first else None

    @abc.abstractmethod
    def disable(self, state, project_id: str, error: str) -> None: ...

    @abc.abstractmethod
    def record_error(self, state, project_id: str, error: str) -> None: ...

    def mark_started(self, state, project_id: str) -> None:
        """Note that a run began (object storage keeps `run_started_at`; API sinks have no such column)."""

    @abc.abstractmethod
    def mark_finished(self, state, project_id: str, last_sync_at: dt.datetime) -> None: ...

    # ---------------------------------------------------------------------------------- delivery

    @abc.abstractmethod
    def deliver(self, job: WindowJob, *, clickhouse, state, resources: dict) -> Delivered:
        """Deliver `job.span` of the project's events; raise CustomerFault / TransientFault /
        DeploymentFault / ConfigError as the cause is. Idempotent: a re-run delivers the same ids/keys."""

    def recorded_states(self, *, state, resources: dict, integration, frequency: str, windows: list[Window],
                        log: Callable[[str], None]) -> dict[dt.datetime, WindowState]:
        """What was delivered for each of `windows` (start -> state); windows never delivered are absent.
        Default: the delivery records the runner keeps in `sync_windows`, summed over a window's pieces."""
        return state.delivered_states(self.cursor_sink(frequency), integration.project_id, windows)


def first_event_at(clickhouse, project_id: str) -> dt.datetime | None:
    rows = clickhouse.query_dicts(first_event_sql(clickhouse.events_table), {"project_id": project_id})
    if not rows or not int(rows[0]["rows"]):
        return None
    first = rows[0]["first"]
    return first if first.tzinfo else first.replace(tzinfo=dt.UTC)


def span_state(clickhouse, project_id: str, span, run_id: str, sink: str) -> tuple[int, str | None]:
    """ClickHouse's FINAL count() and max(event_ts) of a span: what an API sink records with a delivery."""
    sql = (f"SELECT count(), max(event_ts) FROM {qualified_table(clickhouse.events_table)} FINAL "
           f"WHERE {WINDOW_FILTER}")
    count, latest = clickhouse.query(sql, {"project_id": project_id, "start": span.start, "end": span.end},
                                     tags=query_tags(run=run_id, sink=sink))[0]
    return int(count), iso(latest) if int(count) else None
