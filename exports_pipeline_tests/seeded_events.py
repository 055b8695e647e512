"""A seeded events table shared by the export tests of one module (a pytest plugin of the root conftest)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from exports_pipeline.events.columns import INSERT_COLUMNS
from exports_pipeline.events.ddl import create_events_table
from exports_pipeline.events.queries import qualified_table
from exports_pipeline.events.seed import seed
from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client
from exports_pipeline.settings import chdb_path_of

DAY = dt.date(2026, 11, 2)
DAY_START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
DAY_END = DAY_START + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def seeded(chdb_path: str) -> Iterator[ClickHouseResource]:
    """Two projects, two days (the second day's rows must never leak into the first window), hard text,
    >1 MB inputs, unmerged updates and deletions."""
    database = f"exp_{uuid.uuid4().hex[:10]}"
    table = f"{database}.events_full"
    with chdb_client(chdb_path) as client:
        client.command(f"CREATE DATABASE {database}")
        create_events_table(client, table)
        seed(client, table, projects=2, days=2, events_per_day=1500, start=DAY)
    yield ClickHouseResource(url=f"chdb://{chdb_path}", events_table=table)
    with chdb_client(chdb_path) as client:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


#: Langfuse migration 0042's columns, the ones a deployment that has not run it lacks.
MIGRATION_0042_COLUMNS = ("ingestion_api_key", "ingestion_sdk_name", "ingestion_sdk_version")


def copy_events_table(source: ClickHouseResource, table: str, *, drop: tuple[str, ...] = (),
                      add: tuple[str, ...] = (), fill: dict[str, str] | None = None) -> ClickHouseResource:
    """A copy of `source`'s table as `table` (every stored version, unmerged), shaped like another
    deployment: `drop` columns dropped (as a Langfuse down migration does), `add` column definitions
    ALTERed in (as a later migration would), filled from `fill` (column -> SQL expression over the
    source row)."""
    fill = fill or {}
    names = [c.name for c in INSERT_COLUMNS if c.name not in drop]
    target = qualified_table(table)
    with chdb_client(chdb_path_of(source.url)) as client:
        create_events_table(client, table)
        for name in drop:
            client.command(f"ALTER TABLE {target} DROP COLUMN `{name}`")
        for definition in add:
            client.command(f"ALTER TABLE {target} ADD COLUMN {definition}")
        columns = ", ".join(f"`{n}`" for n in [*names, *fill])
        values = ", ".join([*(f"`{n}`" for n in names), *fill.values()])
        client.command(f"INSERT INTO {target} ({columns}) SELECT {values} FROM {qualified_table(source.events_table)} "
                       "SETTINGS optimize_on_insert = 0")
    return ClickHouseResource(url=source.url, events_table=table)
