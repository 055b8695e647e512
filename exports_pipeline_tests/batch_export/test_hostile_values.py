"""User text reaches ClickHouse as parameters and is matched literally: quotes, backslashes, LIKE's `%`
and `_`, unicode and a 10k-character value, in filters, metadata keys and search."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from exports_pipeline.batch_export.query import BatchQuery, count_sql, export_sql
from exports_pipeline.events.ddl import create_events_table
from exports_pipeline.resources.clickhouse import chdb_client

PROJECT, OTHER = "p-hostile", "p-other"
START = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
CUTOFF = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
LONG = "ü" * 9_998 + "%_"
KEY = "k'\"%_\\ ü"
HOSTILE = ["a_b", "axb", "100%", "100x", "back\\slash", "back\\\\slash", "it's \"q\"", "%", "_", "\\",
           "Ünïcödé 中文 🚀", "ünïcödé 中文 🚀", LONG, "x' OR '1'='1", ""]


@pytest.fixture(scope="module")
def hostile(chdb_path: str) -> Iterator[Any]:
    """One span per hostile name (its metadata KEY holds the same text, its input the name too), plus the
    same names under another project. One engine session for the module: these are many small queries."""
    database = f"hostile_{uuid.uuid4().hex[:10]}"
    names = ["project_id", "trace_id", "span_id", "start_time", "name", "metadata_names", "metadata_values",
             "input", "event_ts", "is_deleted"]
    rows = [[project, f"t{i}", f"{project}-{i}", START + dt.timedelta(seconds=i), text, [KEY], [text], text,
             START, 0]
            for project in (PROJECT, OTHER) for i, text in enumerate(HOSTILE)]
    with chdb_client(chdb_path) as client:
        client.command(f"CREATE DATABASE {database}")
        create_events_table(client, f"{database}.events_full")
        client.insert(f"{database}.events_full", rows, column_names=names)
        client.events_table = f"{database}.events_full"
        try:
            yield client
        finally:
            client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def _ids(client: Any, **kw) -> list[str]:
    q = BatchQuery.build(PROJECT, CUTOFF, columns="id", **kw)
    sql, params = export_sql(client.events_table, q, "csv")
    ids = sorted(r[0] for r in client.query(sql, parameters=params).result_rows)
    sql, params = count_sql(client.events_table, q)
    assert client.query(sql, parameters=params).result_rows[0][0] == len(ids)
    return ids


def _expected(pred) -> list[str]:
    return sorted(f"{PROJECT}-{i}" for i, text in enumerate(HOSTILE) if pred(text))


OPS = {
    "=": lambda x, v: x == v, "contains": lambda x, v: v in x, "does not contain": lambda x, v: v not in x,
    "starts with": lambda x, v: x.startswith(v), "ends with": lambda x, v: x.endswith(v),
}


@pytest.mark.parametrize("value", HOSTILE, ids=[f"v{i}" for i in range(len(HOSTILE))])
def test_hostile_values_match_literally(hostile, value) -> None:
    for op, fn in OPS.items():
        string = [{"column": "name", "type": "string", "operator": op, "value": value}]
        assert _ids(hostile, filter=string) == _expected(lambda x, fn=fn: fn(x, value)), op
        meta = [{"column": "metadata", "type": "stringObject", "key": KEY, "operator": op, "value": value}]
        assert _ids(hostile, filter=meta) == _expected(lambda x, fn=fn: fn(x, value)), op
    options = [{"column": "name", "type": "stringOptions", "operator": "any of", "value": [value, "zzz"]}]
    assert _ids(hostile, filter=options) == _expected(lambda x: x == value)
    if value:
        folded = value.lower()
        assert _ids(hostile, search=value) == _expected(lambda x: folded in x.lower())
        assert _ids(hostile, search=value, search_types=["input"]) == _expected(lambda x: folded in x.lower())


def test_like_wildcards_are_plain_text(hostile) -> None:
    contains = lambda v: [{"column": "name", "type": "string", "operator": "contains", "value": v}]  # noqa: E731
    assert _ids(hostile, filter=contains("a_b")) == [f"{PROJECT}-0"]  # not axb
    assert _ids(hostile, filter=contains("100%")) == [f"{PROJECT}-2"]  # not 100x
    assert _ids(hostile, search="A_B") == [f"{PROJECT}-0"]
    assert _ids(hostile, search="ÜNÏCÖDÉ") == [f"{PROJECT}-10", f"{PROJECT}-11"]
    assert len(_ids(hostile, search="%")) == 3  # "100%", "%", and the long value


def test_an_unknown_metadata_key_matches_nothing(hostile) -> None:
    for op in OPS:
        absent = [{"column": "metadata", "type": "stringObject", "key": KEY + "x", "operator": op, "value": ""}]
        assert _ids(hostile, filter=absent) == [], op
