"""A seeded events table shared by the export tests of one module (a pytest plugin of the root conftest)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from exports_pipeline.events.ddl import create_events_table
from exports_pipeline.events.seed import seed
from exports_pipeline.resources.clickhouse import ClickHouseResource, chdb_client

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
