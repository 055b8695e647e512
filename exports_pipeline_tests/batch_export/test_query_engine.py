"""Batch export SQL on the real engine (chDB) over seeded events, checked against an independent Python
evaluation of the same request over the project's rows read with FINAL.

The Python side below is written from the semantics in `batch_export.filters`' docstring, not from the
SQL: it reads the stored columns natively and decides each condition itself.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from exports_pipeline.batch_export.filters import OPERATORS
from exports_pipeline.batch_export.query import BATCH_EXPORT_COLUMNS, BatchQuery, count_sql, export_sql
from exports_pipeline.events.queries import PARQUET_SETTINGS, TEXT_SETTINGS

PROJECT, OTHER = "proj-1", "proj-2"
CUTOFF = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)  # after both seeded days
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RAW_COLUMNS = (
    "span_id", "trace_id", "parent_span_id", "start_time", "end_time", "completion_start_time", "name", "type",
    "environment", "version", "release", "trace_name", "user_id", "session_id", "tags", "level",
    "status_message", "is_app_root", "prompt_id", "prompt_name", "prompt_version", "model_id",
    "provided_model_name", "model_parameters", "usage_details", "cost_details", "tool_definitions",
    "tool_calls", "tool_call_names", "input", "output", "metadata_names", "metadata_values",
    "experiment_id", "experiment_item_root_span_id",
)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def read_raw(clickhouse, project: str) -> list[dict]:
    cols = ", ".join(f"`{c}`" for c in RAW_COLUMNS)
    rows = clickhouse.query_dicts(f"SELECT {cols} FROM {clickhouse.events_table} FINAL "
                                  "WHERE project_id = {p:String} AND is_deleted = 0", {"p": project})
    for r in rows:
        for c in ("start_time", "end_time", "completion_start_time"):
            r[c] = _aware(r[c])
    return rows


@pytest.fixture(scope="module")
def raw(seeded) -> list[dict]:
    rows = read_raw(seeded, PROJECT)
    assert len(rows) > 2500
    return rows


# ------------------------------------------------------------------------ the independent Python model

def _us(t: dt.datetime) -> int:
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def _ms_between(a: dt.datetime, b: dt.datetime | None) -> int | None:
    """Whole milliseconds between the two instants' millisecond ticks (ClickHouse's date_diff)."""
    return None if b is None else _us(b) // 1000 - _us(a) // 1000


def _root(r) -> bool:
    return r["parent_span_id"] == "" or bool(r["is_app_root"])


def _key_sum(m: dict, needle: str):
    return sum((v for k, v in m.items() if needle in k.lower()), 0)


def _first_meta(r) -> dict:
    out: dict = {}
    for k, v in zip(r["metadata_names"], r["metadata_values"], strict=True):
        out.setdefault(k, v)
    return out


VALUE = {  # filter column id -> the row's value (None = NULL)
    "id": lambda r: r["span_id"],
    "traceId": lambda r: r["trace_id"],
    "startTime": lambda r: r["start_time"],
    "endTime": lambda r: r["end_time"],
    "name": lambda r: r["name"],
    "type": lambda r: r["type"],
    "environment": lambda r: r["environment"],
    "version": lambda r: r["version"],
    "release": lambda r: r["release"],
    "userId": lambda r: r["user_id"],
    "sessionId": lambda r: r["session_id"],
    "traceName": lambda r: r["trace_name"] or (r["name"] if _root(r) and r["name"] else None),
    "level": lambda r: r["level"],
    "statusMessage": lambda r: r["status_message"],
    "promptName": lambda r: r["prompt_name"],
    "promptVersion": lambda r: r["prompt_version"],
    "modelId": lambda r: r["model_id"],
    "providedModelName": lambda r: r["provided_model_name"],
    "totalCost": lambda r: r["cost_details"].get("total"),
    "inputTokens": lambda r: _key_sum(r["usage_details"], "input"),
    "totalTokens": lambda r: r["usage_details"].get("total"),
    "inputCost": lambda r: _key_sum(r["cost_details"], "input"),
    "latency": lambda r: _ms_between(r["start_time"], r["end_time"]),
    "timeToFirstToken": lambda r: _ms_between(r["start_time"], r["completion_start_time"]),
    "input": lambda r: r["input"],
    "output": lambda r: r["output"],
    "traceTags": lambda r: list(r["tags"]),
    "toolNames": lambda r: list(r["tool_definitions"]),
    "toolCalls": lambda r: len(r["tool_calls"]),
    "hasParentObservation": lambda r: r["parent_span_id"] != "",
    "isRootObservation": _root,
    "hasInput": lambda r: r["input"] != "",
    "parentObservationId": lambda r: r["parent_span_id"] or None,
    "isExperimentItemRootSpan": lambda r: r["experiment_item_root_span_id"] == r["span_id"],
}
MS_COLUMNS = {"latency", "timeToFirstToken"}  # seconds in a condition, milliseconds in the row
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _text_op(op: str, x: str, v: str) -> bool:
    return {"=": x == v, "contains": v in x, "does not contain": v not in x,
            "starts with": x.startswith(v), "ends with": x.endswith(v)}[op]


def _compare(op: str, x, v) -> bool:
    return {"=": x == v, ">": x > v, "<": x < v, ">=": x >= v, "<=": x <= v}[op]


def _number(v) -> Decimal:
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


def matches(r: dict, c: dict) -> bool:
    t, op, v = c["type"], c["operator"], c.get("value")
    if c["column"] == "metadata":
        if t == "null":
            return (not r["metadata_names"]) == (op == "is null")
        meta = _first_meta(r)
        if c["key"] not in meta:
            return False
        x = meta[c["key"]]
        if t == "stringObject":
            return _text_op(op, x, v)
        return bool(_PLAIN_DECIMAL.fullmatch(x)) and _compare(op, Decimal(x), _number(v))
    x = VALUE[c["column"]](r)
    if t == "null":
        return (x is None or x == "" or x == []) == (op == "is null")
    if x is None:
        return False
    if t == "string":
        return _text_op(op, x, v)
    if t in ("stringOptions", "arrayOptions"):
        if not isinstance(x, list):
            return (x in v) == (op == "any of")
        hit = bool(set(x) & set(v))
        return {"any of": hit, "none of": not hit, "all of": set(v) <= set(x)}[op]
    if t == "number":
        return _compare(op, Decimal(x), _number(v) * (1000 if c["column"] in MS_COLUMNS else 1))
    if t == "datetime":
        return _compare(op, x, dt.datetime.fromisoformat(v))
    assert t == "boolean"
    return (x == v) == (op == "=")


def _escaped(text: str) -> str:
    return json.dumps(text)[1:-1] if not text.isascii() else text


def search_hit(r: dict, query: str, types: list[str]) -> bool:
    q = query.lower()
    forms = {q, _escaped(query).lower()}
    fields = {"id": [r["span_id"], r["name"], r["trace_name"], r["user_id"], r["session_id"], r["trace_id"]],
              "content": [r["input"], r["output"]], "input": [r["input"]], "output": [r["output"]]}
    return any((q in f.lower()) if t == "id" else any(n in f.lower() for n in forms)
               for t in types for f in fields[t])


# ----------------------------------------------------------------------------------------------- helpers

def run_ids(clickhouse, q: BatchQuery) -> list[str]:
    sql, params = export_sql(clickhouse.events_table, q, "parquet")
    return [row[0] for row in clickhouse.query(sql, params)]


def run_count(clickhouse, q: BatchQuery) -> int:
    sql, params = count_sql(clickhouse.events_table, q)
    return int(clickhouse.query(sql, params)[0][0])


def query(filter=None, **kw) -> BatchQuery:
    kw.setdefault("columns", "id")
    kw.setdefault("limit", 10_000_000)
    return BatchQuery.build(kw.pop("project", PROJECT), kw.pop("cutoff", CUTOFF), filter=filter, **kw)


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def pivots(raw) -> dict:
    """Values taken from the data, so `=` and the boundaries of `>=`/`<=` are hit exactly."""
    by_start = sorted(raw, key=lambda r: r["start_time"])
    mid = by_start[len(by_start) // 2]
    with_cost = sorted((r for r in raw if "total" in r["cost_details"]), key=lambda r: r["cost_details"]["total"])
    latencies = sorted(VALUE["latency"](r) for r in raw if r["end_time"] is not None)
    users = sorted({r["user_id"] for r in raw if r["user_id"]})
    tokens = sorted(VALUE["inputTokens"](r) for r in raw if r["usage_details"])
    ttft = sorted(VALUE["timeToFirstToken"](r) for r in raw if r["completion_start_time"] is not None)
    two_tags = sorted(r["tags"][:2] for r in raw if len(r["tags"]) >= 2)
    return {"start": _iso(mid["start_time"]), "end": _iso(mid["end_time"] or mid["start_time"]),
            "cost": with_cost[len(with_cost) // 2]["cost_details"]["total"],
            "latency": latencies[len(latencies) // 2] / 1000, "user": users[len(users) // 2],
            "tokens": tokens[len(tokens) // 2], "ttft": ttft[len(ttft) // 2] / 1000,
            "two_tags": two_tags[len(two_tags) // 2]}


def _cases():
    """(type, operator, condition-builder) covering every pair of OPERATORS this project supports."""
    c = []

    def add(t, op, column, value, key=None):
        cond = {"column": column, "type": t, "operator": op, "value": value}
        if key is not None:
            cond["key"] = key
        c.append(pytest.param(cond, id=f"{t}:{op}:{column}"))

    for op in OPERATORS["datetime"]:
        add("datetime", op, "startTime", "@start")
        add("datetime", op, "endTime", "@end")
    for op, column, value in (("=", "userId", "@user"), ("=", "traceName", "rag-pipeline"),
                              ("contains", "statusMessage", ","), ("contains", "traceName", "summ"),
                              ("does not contain", "name", "a"), ("does not contain", "parentObservationId", "0"),
                              ("starts with", "userId", "user-1"), ("starts with", "output", "[v2] "),
                              ("ends with", "sessionId", "a"), ("ends with", "input", "\\")):
        add("string", op, column, value)
    for op in OPERATORS["number"]:
        add("number", op, "latency", "@latency")
        add("number", op, "totalCost", "@cost")
        add("number", op, "promptVersion", 2)
        add("number", op, "inputTokens", "@tokens")
        add("number", op, "timeToFirstToken", "@ttft")
    add("number", ">", "toolCalls", 0)
    add("number", "<", "inputCost", 0.001)
    add("number", ">=", "totalTokens", 2000)
    for op in OPERATORS["stringOptions"]:
        add("stringOptions", op, "environment", ["production"])
        add("stringOptions", op, "traceName", ["rag-pipeline", "code-review"])
        add("stringOptions", op, "name", ["llm-call", "rerank"])
        add("stringOptions", op, "traceTags", ["prod"])
    for op in OPERATORS["arrayOptions"]:
        add("arrayOptions", op, "traceTags", "@two_tags")
        add("arrayOptions", op, "toolNames", ["get_weather"])
    for op, key, value in (("=", "note", "plain ascii text"), ("=", "source", "seed"), ("contains", "note", ","),
                           ("does not contain", "note", "a"), ("starts with", "note", "line"),
                           ("ends with", "note", "\\")):
        add("stringObject", op, "metadata", value, key)
    for op in OPERATORS["numberObject"]:
        add("numberObject", op, "metadata", 2, "attempt")
    add("numberObject", ">", "metadata", 1.5, "attempt")
    for op in OPERATORS["boolean"]:
        add("boolean", op, "hasParentObservation", True)
        add("boolean", op, "isRootObservation", False)
        add("boolean", op, "hasInput", True)
    add("boolean", "=", "isExperimentItemRootSpan", True)
    for op in OPERATORS["null"]:
        for column in ("endTime", "userId", "traceTags", "promptVersion", "totalCost", "parentObservationId",
                       "totalTokens", "version"):
            add("null", op, column, "")
    return c


CASES = _cases()


def test_cases_cover_every_supported_type_and_operator() -> None:
    covered = {(p.values[0]["type"], p.values[0]["operator"]) for p in CASES}
    refused = {"categoryOptions", "booleanObject"}  # scores only: refused, tested in test_filters
    assert covered == {(t, op) for t, ops in OPERATORS.items() if t not in refused for op in ops}


@pytest.mark.parametrize("condition", CASES)
def test_condition_matches_the_python_evaluation(seeded, raw, pivots, condition) -> None:
    if isinstance(condition["value"], str) and condition["value"].startswith("@"):
        pivot = pivots[condition["value"][1:]]
        condition = {**condition, "value": float(pivot) if isinstance(pivot, Decimal) else pivot}
    expected = sorted(r["span_id"] for r in raw if matches(r, condition))
    assert 0 < len(expected) < len(raw), "the case must select some rows and leave some"
    q = query([condition])
    assert sorted(run_ids(seeded, q)) == expected
    assert run_count(seeded, q) == len(expected)


def test_issue_examples_shape_on_seeded_rows(seeded, raw) -> None:
    """All conditions of a payload are ANDed; the combination matches Python too."""
    conditions = [
        {"column": "environment", "type": "stringOptions", "operator": "any of", "value": ["production"]},
        {"column": "type", "type": "stringOptions", "operator": "any of", "value": ["GENERATION"]},
        {"column": "startTime", "type": "datetime", "operator": ">=", "value": "2026-11-02T06:00:00.000Z"},
        {"column": "startTime", "type": "datetime", "operator": "<=", "value": "2026-11-03T06:00:00.000Z"},
        {"column": "latency", "type": "number", "operator": ">=", "value": 2.5},
        {"column": "traceTags", "type": "arrayOptions", "operator": "none of", "value": ["beta"]},
        {"column": "metadata", "type": "stringObject", "key": "source", "operator": "=", "value": "seed"},
    ]
    expected = sorted(r["span_id"] for r in raw if all(matches(r, c) for c in conditions))
    assert expected
    assert sorted(run_ids(seeded, query(conditions))) == expected


@pytest.mark.parametrize(("text", "types"), [
    ("RAG-PIPE", ["id"]), ("user-12", ["id"]), ("e5", ["id"]), ("LINE TWO", ["content"]),
    ("é", ["content"]), ("é", ["input"]), ("é", ["id"]), ("🚀", ["output"]), ("中文", ["id", "output"]),
])
def test_search_matches_the_python_evaluation(seeded, raw, text, types) -> None:
    expected = sorted(r["span_id"] for r in raw if search_hit(r, text, types))
    assert 0 < len(expected) < len(raw)
    q = query(search=text, search_types=types)
    assert sorted(run_ids(seeded, q)) == expected
    assert run_count(seeded, q) == len(expected)


def test_search_finds_the_json_escaped_form_in_texts_only(seeded, raw) -> None:
    escaped = [r["span_id"] for r in raw if "\\u00e9" in r["output"] and "é" not in r["output"]]
    assert escaped, "the seed stores literal \\u00e9 text"
    got = set(run_ids(seeded, query(search="é", search_types=["output"])))
    assert set(escaped) <= got


ORDER_VALUE = {
    "name": lambda r: r["name"], "statusMessage": lambda r: r["status_message"],
    "latencyMs": VALUE["latency"], "totalCost": VALUE["totalCost"], "traceName": VALUE["traceName"],
    "promptVersion": VALUE["promptVersion"], "startTime": VALUE["startTime"], "endTime": VALUE["endTime"],
}


def expected_order(rows: list[dict], column: str, direction: str) -> list[str]:
    """NULLs last in both directions; ties by start time, span id, trace id in the same direction."""
    desc = direction == "desc"
    value = ORDER_VALUE[column]

    def tie(r):
        return (r["start_time"], r["span_id"], r["trace_id"])

    present = sorted((r for r in rows if value(r) is not None), key=lambda r: (value(r), *tie(r)), reverse=desc)
    absent = sorted((r for r in rows if value(r) is None), key=tie, reverse=desc)
    return [r["span_id"] for r in present + absent]


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("column", list(ORDER_VALUE))
def test_ordering_by_columns_both_directions(seeded, raw, column, direction) -> None:
    got = run_ids(seeded, query(order_by=f"{column}:{direction}"))
    assert got == expected_order(raw, column, direction)


def test_default_order_is_start_time_descending_and_read_in_order(seeded, raw) -> None:
    q = query()
    assert (q.order_by, q.direction) == ("startTime", "desc")
    assert run_ids(seeded, q) == expected_order(raw, "startTime", "desc")
    sql, params = export_sql(seeded.events_table, q, "csv")
    pipeline = "\n".join(r[0] for r in seeded.query(f"EXPLAIN PIPELINE {sql}", params))
    assert "FinishSortingTransform" in pipeline and "MergeSortingTransform" not in pipeline, pipeline
    assert "InReverseOrder" in pipeline, pipeline


def test_other_orders_sort_correctly_when_spilled_to_disk(seeded, raw) -> None:
    q = query(order_by="name:asc")
    sql, params = export_sql(seeded.events_table, q, "parquet", sort_settings={"max_bytes_before_external_sort": 1})
    assert "max_bytes_before_external_sort = 1" in sql
    assert [r[0] for r in seeded.query(sql, params)] == expected_order(raw, "name", "asc")
    pipeline = "\n".join(r[0] for r in seeded.query(f"EXPLAIN PIPELINE {sql}", params))
    assert "MergeSortingTransform" in pipeline, pipeline


def test_limit_cuts_the_ordered_rows_and_count_tells_how_many_matched(seeded, raw) -> None:
    condition = {"column": "environment", "type": "stringOptions", "operator": "any of", "value": ["production"]}
    matching = [r for r in raw if matches(r, condition)]
    q = query([condition], order_by="latencyMs:desc", limit=25)
    assert run_ids(seeded, q) == expected_order(matching, "latencyMs", "desc")[:25]
    assert run_count(seeded, q) == len(matching) > 25


def test_cutoff_is_exclusive_to_the_microsecond(seeded, raw) -> None:
    pivot = sorted(raw, key=lambda r: r["start_time"])[len(raw) // 3]["start_time"]
    before = sorted(r["span_id"] for r in raw if r["start_time"] < pivot)
    at = sorted(r["span_id"] for r in raw if r["start_time"] <= pivot)
    assert len(at) > len(before) > 0
    assert sorted(run_ids(seeded, query(cutoff=pivot))) == before
    assert sorted(run_ids(seeded, query(cutoff=pivot + dt.timedelta(microseconds=1)))) == at
    assert run_count(seeded, query(cutoff=pivot)) == len(before)


def test_no_request_reaches_another_projects_rows(seeded, raw) -> None:
    mine = {r["span_id"] for r in raw}
    theirs = {r["span_id"] for r in read_raw(seeded, OTHER)}
    assert theirs and not mine & theirs
    hostile = "x' OR project_id != '' OR '1'='1"
    requests = [
        query(search="user-1"),
        query(search="proj-2", search_types=["id", "content"]),
        query([{"column": "name", "type": "string", "operator": "does not contain", "value": hostile}]),
        query([{"column": "metadata", "type": "stringObject", "key": hostile, "operator": "does not contain",
                "value": hostile}]),
        query([{"column": "traceTags", "type": "arrayOptions", "operator": "none of", "value": [hostile]}],
              search=hostile[:1]),
    ]
    for q in requests:
        got = set(run_ids(seeded, q))
        assert got <= mine and not got & theirs
    assert run_ids(seeded, query(project=hostile)) == []


# ----------------------------------------------------------------------------------- the file's shape

def _expected_row(r: dict) -> dict:
    return {
        "id": r["span_id"], "traceId": r["trace_id"], "traceName": VALUE["traceName"](r), "type": r["type"],
        "name": r["name"], "startTime": _iso(r["start_time"]),
        "endTime": r["end_time"] and _iso(r["end_time"]),
        "completionStartTime": r["completion_start_time"] and _iso(r["completion_start_time"]),
        "environment": r["environment"], "version": r["version"], "userId": r["user_id"],
        "sessionId": r["session_id"], "level": r["level"], "statusMessage": r["status_message"],
        "promptName": r["prompt_name"], "promptId": r["prompt_id"], "promptVersion": r["prompt_version"],
        "modelId": r["model_id"], "providedModelName": r["provided_model_name"],
        "modelParameters": r["model_parameters"], "usageDetails": dict(r["usage_details"]),
        "costDetails": {k: Decimal(v).normalize() for k, v in r["cost_details"].items()},
        "totalCost": None if "total" not in r["cost_details"] else Decimal(r["cost_details"]["total"]).normalize(),
        "input": r["input"], "output": r["output"], "metadata": _first_meta(r),
        "latencyMs": VALUE["latency"](r), "timeToFirstTokenMs": VALUE["timeToFirstToken"](r),
        "tags": list(r["tags"]), "release": r["release"], "parentObservationId": r["parent_span_id"] or None,
    }


KIND = {"startTime": "ts", "endTime": "ts", "completionStartTime": "ts", "usageDetails": "map",
        "costDetails": "decmap", "metadata": "map", "tags": "list", "totalCost": "dec", "promptVersion": "int",
        "latencyMs": "int", "timeToFirstTokenMs": "int"}


def _canonical(name: str, value, fmt: str):
    kind = KIND.get(name, "str")
    if value is None:
        return None
    if fmt == "csv" and kind in ("map", "decmap", "list"):
        value = json.loads(value, parse_float=Decimal)
    if kind == "ts":
        return value if isinstance(value, str) else _iso(_aware(value))
    if kind in ("map", "decmap"):
        value = dict(value)  # Parquet maps come back as (key, value) pairs
        return {k: Decimal(str(v)).normalize() for k, v in value.items()} if kind == "decmap" else value
    if kind == "dec":
        return Decimal(str(value)).normalize()
    if kind == "int":
        return int(value)
    return value


def _read(data: bytes, fmt: str) -> tuple[list[str], list[dict]]:
    if fmt == "csv":
        header = [n.strip('"') for n in data.split(b"\r\n", 1)[0].decode().split(",")]
        table = pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(newlines_in_values=True),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={n: pa.string() for n in header}, strings_can_be_null=True,
                                   quoted_strings_can_be_null=False, null_values=[""]))
        return header, table.to_pylist()
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        return table.column_names, table.to_pylist()
    rows = [json.loads(line, parse_float=Decimal) for line in data.decode().splitlines() if line]
    return list(rows[0]), rows


FILE_FORMAT = {"csv": ("CSVWithNames", TEXT_SETTINGS), "json": ("JSONEachRow", TEXT_SETTINGS),
               "jsonl": ("JSONEachRow", TEXT_SETTINGS), "parquet": ("Parquet", PARQUET_SETTINGS)}
SUBSET = ["metadata", "id", "tags", "totalCost", "startTime", "traceName", "parentObservationId", "latencyMs",
          "costDetails", "input"]


@pytest.mark.parametrize("columns", [None, SUBSET], ids=["all", "subset"])
@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_each_format_renders_the_row_shape(seeded, raw, tmp_path, fmt, columns) -> None:
    names = list(BATCH_EXPORT_COLUMNS) if columns is None else columns
    q = query(columns=columns or None, order_by="startTime:asc", limit=400,
              search="é", search_types=["id", "content"])  # hard text: quotes, newlines, unicode, escapes
    sql, params = export_sql(seeded.events_table, q, fmt)
    ch_format, settings = FILE_FORMAT[fmt]
    path = tmp_path / f"out.{fmt}"
    seeded.export_to_file(sql, ch_format, str(path), params, settings=settings)
    header, rows = _read(path.read_bytes(), fmt)
    assert header == names
    matching = [r for r in raw if search_hit(r, "é", ["id", "content"])]
    order = {sid: i for i, sid in enumerate(expected_order(matching, "startTime", "asc")[:400])}
    expected = sorted((r for r in matching if r["span_id"] in order), key=lambda r: order[r["span_id"]])
    assert len(rows) == len(expected) > 50
    for got, want in zip(rows, expected, strict=True):
        assert list(got) == names
        want_row = _expected_row(want)
        assert {n: _canonical(n, got[n], fmt) for n in names} == {n: want_row[n] for n in names}
    if "parentObservationId" in names:  # NULL (a root's parent) stays apart from ''
        assert {r["parentObservationId"] is None for r in rows} == {True, False}


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_filters_read_the_table_not_the_rendered_columns(seeded, raw, fmt) -> None:
    """In CSV `tags` and `metadata` are rendered as JSON text under their own names; a filter on them must
    still read the stored arrays (ClickHouse lets a SELECT alias shadow a column of the same name)."""
    conditions = [
        {"column": "traceTags", "type": "arrayOptions", "operator": "any of", "value": ["prod", "web"]},
        {"column": "metadata", "type": "stringObject", "key": "source", "operator": "=", "value": "seed"},
        {"column": "traceName", "type": "stringOptions", "operator": "none of", "value": ["translate"]},
    ]
    q = BatchQuery.build(PROJECT, CUTOFF, filter=conditions, order_by="tags:asc", limit=10_000_000)
    sql, params = export_sql(seeded.events_table, q, fmt)
    got = sorted(row[0] for row in seeded.query(sql, params))
    expected = sorted(r["span_id"] for r in raw if all(matches(r, c) for c in conditions))
    assert 0 < len(expected) < len(raw) and got == expected
