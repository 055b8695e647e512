"""Validation of a batch export request before anything is stored: Langfuse filter JSON, search, columns,
order. Every refusal is a ConfigError naming the field and, for a filter, the condition."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from exports_pipeline.batch_export.filters import SEARCH_TYPES, parse_filter, validate_search
from exports_pipeline.batch_export.query import (
    BATCH_EXPORT_COLUMNS,
    BatchQuery,
    count_sql,
    export_sql,
    parse_columns,
    parse_order_by,
)
from exports_pipeline.errors import ConfigError

# The issue's three payloads, exactly as Langfuse's events table sends them.
EXAMPLES = [
    '[{"column":"environment","type":"stringOptions","operator":"any of","value":["production"]},'
    '{"column":"type","type":"stringOptions","operator":"any of","value":["GENERATION"]},'
    '{"column":"startTime","type":"datetime","operator":">=","value":"2026-11-19T00:00:00.000Z"},'
    '{"column":"startTime","type":"datetime","operator":"<=","value":"2026-11-20T00:00:00.000Z"}]',
    '[{"column":"traceTags","type":"arrayOptions","operator":"all of","value":["checkout","prod"]},'
    '{"column":"metadata","type":"stringObject","key":"user_tier","operator":"=","value":"gold"},'
    '{"column":"latency","type":"number","operator":">=","value":2.5},'
    '{"column":"startTime","type":"datetime","operator":">=","value":"2026-11-13T00:00:00.000Z"}]',
    '[{"column":"name","type":"stringOptions","operator":"none of","value":["healthcheck"]},'
    '{"column":"release","type":"null","operator":"is null","value":""},'
    '{"column":"totalCost","type":"number","operator":">","value":0}]',
]
CUTOFF = dt.datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize("payload", EXAMPLES)
def test_issue_examples_parse_compile_and_round_trip(payload: str) -> None:
    conditions = parse_filter(payload)
    assert [c.to_json() for c in conditions] == json.loads(payload)
    q = BatchQuery.build("proj-1", CUTOFF, filter=payload)
    stored = json.loads(json.dumps(q.to_json()))
    assert BatchQuery.from_json(stored) == q
    for fmt in ("csv", "json", "jsonl", "parquet"):
        sql, params = export_sql("events_full", q, fmt)
        assert "{project_id:String}" in sql and params["project_id"] == "proj-1"
    sql, params = count_sql("events_full", q)
    assert sql.startswith("SELECT count() AS rows") and params["cutoff"] == CUTOFF


def test_values_never_reach_the_sql_text() -> None:
    hostile = "x' OR 1=1 -- \\ %_ \"q\" 中文"
    payload = [
        {"column": "name", "type": "string", "operator": "contains", "value": hostile},
        {"column": "metadata", "type": "stringObject", "key": hostile, "operator": "=", "value": hostile},
        {"column": "traceTags", "type": "arrayOptions", "operator": "any of", "value": [hostile]},
    ]
    q = BatchQuery.build(hostile, CUTOFF, filter=payload, search=hostile)
    for sql, params in (export_sql("events_full", q, "csv"), count_sql("events_full", q)):
        assert hostile not in sql and "1=1" not in sql
        assert hostile in params.values()


def _refusal(payload) -> str:
    with pytest.raises(ConfigError) as info:
        parse_filter(payload)
    assert info.value.field == "filter"
    return str(info.value)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"column": "nope", "type": "string", "operator": "=", "value": "x"}, "unknown column"),
        ({"column": "latency", "type": "number", "operator": "contains", "value": 1}, "operators =, >, <, >=, <="),
        ({"column": "latency", "type": "number", "operator": ">", "value": "2.5"}, "must be a number"),
        ({"column": "latency", "type": "number", "operator": ">", "value": True}, "must be a number"),
        ({"column": "latency", "type": "string", "operator": "=", "value": "2"}, "takes number or null"),
        ({"column": "startTime", "type": "datetime", "operator": ">", "value": "2026-11-19T00:00:00"},
         "no time zone"),
        ({"column": "startTime", "type": "datetime", "operator": ">", "value": "yesterday"}, "not an ISO-8601"),
        ({"column": "startTime", "type": "datetime", "operator": ">", "value": "1800-01-01T00:00:00Z"},
         "outside 1900-01-01"),
        ({"column": "environment", "type": "stringOptions", "operator": "any of", "value": []}, "at least one"),
        ({"column": "environment", "type": "stringOptions", "operator": "any of", "value": "prod"},
         "array of strings"),
        ({"column": "traceTags", "type": "arrayOptions", "operator": "some of", "value": ["a"]},
         "any of, none of, all of"),
        ({"column": "metadata", "type": "stringObject", "operator": "=", "value": "gold"}, "need a key"),
        ({"column": "metadata", "type": "numberObject", "key": "k", "operator": "=", "value": "1"},
         "must be a number"),
        ({"column": "hasInput", "type": "boolean", "operator": "=", "value": "true"}, "true or false"),
        ({"column": "hasInput", "type": "null", "operator": "is null", "value": ""}, "takes boolean"),
        ({"column": "release", "type": "null", "operator": "is null", "value": "x"}, 'must be ""'),
        ({"column": "name", "type": "string", "operator": "matches", "value": "x"}, "'matches' is not supported"),
        ({"column": "name", "type": "regex", "operator": "=", "value": "x"}, "not a Langfuse filter type"),
        ({"column": "scores_avg", "type": "numberObject", "key": "accuracy", "operator": ">", "value": 0.5},
         "scores are not part of this project's data"),
        ({"column": "Scores (categorical)", "type": "categoryOptions", "key": "k", "operator": "any of",
          "value": ["a"]}, "scores are not part of this project's data"),
        ({"column": "commentCount", "type": "number", "operator": ">", "value": 0},
         "comments are not part of this project's data"),
        ({"column": "name", "type": "positionInTrace", "operator": "=", "key": "root"}, "positionInTrace"),
        ({"column": "totalCost", "type": "number", "operator": ">", "value": 1e60}, "too large"),
        ({"column": "totalCost", "type": "number", "operator": ">", "value": 1e-40}, "decimal places"),
    ],
)
def test_refusals_name_the_condition(condition: dict, expected: str) -> None:
    ok = {"column": "name", "type": "string", "operator": "=", "value": "x"}
    message = _refusal([ok, condition])
    assert message.startswith("filter condition #2 (column "), message
    assert repr(condition["operator"]) in message, message
    assert expected in message, message


def test_malformed_filters() -> None:
    assert "not valid JSON" in _refusal("[{")
    assert "JSON array" in _refusal('{"column": "name"}')
    assert "filter condition #1" in _refusal(["name = x"])
    assert "has no column" in _refusal([{"type": "string", "operator": "=", "value": "x"}])
    assert parse_filter(None) == [] and parse_filter("") == [] and parse_filter("[]") == []


def test_columns_are_matched_by_id_display_name_and_alias() -> None:
    conditions = parse_filter([
        {"column": "Trace Name", "type": "stringOptions", "operator": "any of", "value": ["a"]},
        {"column": "tags", "type": "arrayOptions", "operator": "all of", "value": []},
        {"column": "model", "type": "string", "operator": "=", "value": "gpt-4o"},
        {"column": "Latency (s)", "type": "number", "operator": "<", "value": 1},
    ])
    assert [c.column for c in conditions] == ["traceName", "traceTags", "providedModelName", "latency"]


def test_search_validation() -> None:
    assert validate_search(None, None) == (None, [])
    assert validate_search("", ["content"]) == (None, [])
    assert validate_search("abc", None) == ("abc", ["id"])
    assert validate_search("abc", ["content", "id", "content"]) == ("abc", ["content", "id"])
    assert set(SEARCH_TYPES) == {"id", "content", "input", "output"}
    with pytest.raises(ConfigError, match="unknown search type 'body'") as info:
        validate_search("abc", ["body"])
    assert info.value.field == "search_type"
    with pytest.raises(ConfigError, match="at least one search type"):
        validate_search("abc", [])


def test_columns_and_order_by() -> None:
    assert BATCH_EXPORT_COLUMNS[:6] == ("id", "traceId", "traceName", "type", "name", "startTime")
    assert BATCH_EXPORT_COLUMNS[-1] == "parentObservationId" and len(BATCH_EXPORT_COLUMNS) == 31
    assert parse_columns(None) == list(BATCH_EXPORT_COLUMNS)
    assert parse_columns("tags, id,latencyMs") == ["tags", "id", "latencyMs"]
    assert parse_columns(["metadata"]) == ["metadata"]
    for bad, message in (("id,,name", "empty name"), ("id,trace_id", "unknown column 'trace_id'"),
                         ("id,id", "named twice")):
        with pytest.raises(ConfigError, match=message) as info:
            parse_columns(bad)
        assert info.value.field == "columns"
    assert parse_order_by(None) == ("startTime", "desc")
    assert parse_order_by("latencyMs") == ("latencyMs", "asc")
    assert parse_order_by("totalCost:DESC") == ("totalCost", "desc")
    for bad, message in (("cost:asc", "cannot order by 'cost'"), ("name:up", "must be asc or desc")):
        with pytest.raises(ConfigError, match=message) as info:
            parse_order_by(bad)
        assert info.value.field == "order_by"


def test_batch_query_invariants_and_stored_form() -> None:
    q = BatchQuery.build("proj-1", CUTOFF, search="é", search_types=["content"], columns="id,input",
                         order_by="name:desc", limit=10)
    stored = q.to_json()
    assert stored["cutoff"] == "2026-11-21T12:00:00.123456Z" and stored["columns"] == ["id", "input"]
    assert BatchQuery.from_json(stored) == q
    with pytest.raises(ConfigError, match="limit"):
        BatchQuery.build("proj-1", CUTOFF, limit=0)
    with pytest.raises(ConfigError, match="timezone-aware"):
        BatchQuery("proj-1", dt.datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="unknown shape"):
        BatchQuery.from_json({"project_id": "p"})
    with pytest.raises(ConfigError) as info:
        BatchQuery.from_json({**stored, "filter": [{"column": "nope", "type": "string", "operator": "=",
                                                    "value": "x"}]})
    assert info.value.field == "filter"
