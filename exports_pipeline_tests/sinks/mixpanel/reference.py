"""The expected Mixpanel event of a ClickHouse row, written again from Langfuse's transformer in plain Python
(independent of the SQL in `sinks/mixpanel/mapping.py`): what every received event is compared with."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import quote

NAMESPACE = uuid.UUID("8f7c3e42-9a1b-4d5f-8e2a-1c6b9d3f4e7a")
# Langfuse's MIXPANEL_BAD_DISTINCT_IDS (worker/src/features/mixpanel/transformers.ts), written out again here.
BAD_IDS = {"undefined", "null", "nil", "none", "unknown", "n/a", "na", "anon", "anonymous", "false", "true", "0",
           "-1", "00000000-0000-0000-0000-000000000000", "<nil>", "[]", "{}", "lmy47d"}
JS_SPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028" \
           "\u2029\u202f\u205f\u3000\ufeff"
COLUMNS = ("start_time", "name", "trace_name", "parent_span_id", "is_app_root", "trace_id", "span_id", "user_id",
           "session_id", "cost_details", "usage_details", "end_time", "completion_start_time", "release", "version",
           "provided_model_name", "level", "type", "tags", "environment", "metadata_names", "metadata_values")


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _ms(value: dt.datetime) -> int:
    return (_utc(value) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def _cut(text: str) -> str:
    return text[:255]


def _encode(text: str) -> str:  # JavaScript's encodeURIComponent
    return quote(text, safe="!*'()~")


def expected_event(row: dict, project_id: str, base_url: str | None = None) -> dict:
    user = row["user_id"]
    valid = bool(user) and user.strip(JS_SPACE).lower() not in BAD_IDS
    names, values = row["metadata_names"], row["metadata_values"]
    found = [v for n, v in zip(names, values, strict=True) if n == "$mixpanel_session_id"]
    session = (found[-1] if found else "") or row["session_id"]
    root = row["parent_span_id"] == "" or bool(row["is_app_root"])
    trace_name = row["trace_name"] or (row["name"] if root else "")
    latency = None if row["end_time"] is None else _ms(row["end_time"]) - _ms(row["start_time"])
    ttft = None if row["completion_start_time"] is None else _ms(row["completion_start_time"]) - _ms(row["start_time"])
    props: dict = {"time": _ms(row["start_time"]), "distinct_id": _cut(user) if valid else "",
                   "$insert_id": str(uuid.uuid5(NAMESPACE, f"{project_id}-{row['span_id']}"))}
    if valid:
        props["$user_id"] = _cut(user)
    if session:
        props["session_id"] = _cut(session)
    props["ip"] = 0
    props["timestamp"] = _utc(row["start_time"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    props["langfuse_observation_name"] = _cut(row["name"])
    props["langfuse_trace_name"] = _cut(trace_name) or None
    props["langfuse_trace_id"] = _cut(row["trace_id"])
    if base_url:
        props["langfuse_url"] = _cut(f"{base_url}/project/{project_id}/traces/{_encode(row['trace_id'])}"
                                     f"?observation={_encode(row['span_id'])}")
        if user:
            props["langfuse_user_url"] = _cut(f"{base_url}/project/{project_id}/users/{_encode(user)}")
    props["langfuse_id"] = _cut(row["span_id"])
    props["langfuse_cost_usd"] = float(row["cost_details"].get("total", 0))
    for key in ("input", "output", "total"):
        props[f"langfuse_{key}_units"] = int(row["usage_details"].get(key, 0))
    props["langfuse_session_id"] = _cut(row["session_id"])
    props["langfuse_project_id"] = project_id
    props["langfuse_user_id"] = _cut(user) or None
    props["langfuse_latency"] = latency
    props["langfuse_latency_seconds"] = None if latency is None else latency / 1000
    props["langfuse_time_to_first_token"] = ttft
    for key, col in (("release", "release"), ("version", "version"), ("model", "provided_model_name"),
                     ("level", "level"), ("type", "type")):
        props[f"langfuse_{key}"] = _cut(row[col])
    props["langfuse_tags"] = [_cut(t) for t in row["tags"][:254]]
    props["langfuse_environment"] = _cut(row["environment"])
    props["langfuse_event_version"] = "1.0.0"
    return {"event": "[Langfuse] Observation", "properties": props}


def source_rows(clickhouse, project_id: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """The window's latest versions (FINAL, not deleted) of one project."""
    from exports_pipeline.events.queries import WINDOW_FILTER, qualified_table

    cols = ", ".join(f"`{c}`" for c in COLUMNS)
    sql = f"SELECT {cols} FROM {qualified_table(clickhouse.events_table)} FINAL WHERE {WINDOW_FILTER}"
    return clickhouse.query_dicts(sql, {"project_id": project_id, "start": start, "end": end})
