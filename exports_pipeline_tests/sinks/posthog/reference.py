"""The expected PostHog event of a ClickHouse FINAL row, written in plain Python from Langfuse's mapping.

Independent of the SQL in `sinks/posthog/mapping.py` on purpose: the tests compare what the receiver got
with what this computes from the same rows, field by field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from urllib.parse import quote

from exports_pipeline.events.queries import WINDOW_FILTER, qualified_table

NAMESPACE = uuid.UUID("0f6c91df-d035-4813-b838-9741ba38ef0b")


def rows_sql(table: str) -> str:
    return (
        "SELECT span_id, trace_id, parent_span_id, name, trace_name, is_app_root, user_id, session_id, "
        "start_time, end_time, completion_start_time, cost_details, usage_details, release, version, "
        "provided_model_name, level, type, tags, environment, metadata_names, metadata_values "
        f"FROM {qualified_table(table)} FINAL WHERE {WINDOW_FILTER}"
    )


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ms(start: dt.datetime, end: dt.datetime | None) -> int | None:
    """ClickHouse's date_diff('millisecond'): the difference of the two values truncated to milliseconds."""
    if end is None:
        return None
    def whole_ms(v: dt.datetime) -> int:
        v = v.replace(tzinfo=None)
        return (v - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
    return whole_ms(end) - whole_ms(start)


def _enc(value: str) -> str:
    return quote(value, safe="-_.!~*'()")  # JavaScript's encodeURIComponent


def expected_event(row: dict, project_id: str, project_name: str | None, base_url: str | None) -> dict:
    event_uuid = str(uuid.uuid5(NAMESPACE, f"{project_id}-{row['span_id']}"))
    user = row["user_id"]
    trace_name = row["trace_name"] or (row["name"] if (row["parent_span_id"] == "" or row["is_app_root"]) else "")
    session = ""
    if "$posthog_session_id" in row["metadata_names"]:
        session = row["metadata_values"][row["metadata_names"].index("$posthog_session_id")]
    latency = _ms(row["start_time"], row["end_time"])
    props: dict = {"timestamp": _iso(row["start_time"]), "langfuse_observation_name": row["name"],
                   "langfuse_trace_name": trace_name or None, "langfuse_trace_id": row["trace_id"]}
    user_url = None
    if base_url:
        props["langfuse_url"] = (f"{base_url}/project/{_enc(project_id)}/traces/{_enc(row['trace_id'])}"
                                 f"?observation={_enc(row['span_id'])}")
        if user:
            user_url = f"{base_url}/project/{_enc(project_id)}/users/{_enc(user)}"
            props["langfuse_user_url"] = user_url
    props.update({
        "langfuse_id": row["span_id"],
        "langfuse_cost_usd": row["cost_details"].get("total", Decimal(0)),
        "langfuse_input_units": row["usage_details"].get("input", 0),
        "langfuse_output_units": row["usage_details"].get("output", 0),
        "langfuse_total_units": row["usage_details"].get("total", 0),
        "langfuse_session_id": row["session_id"],
        "langfuse_project_id": project_id,
        "langfuse_project_name": project_name,
        "langfuse_user_id": user or None,
        "langfuse_latency": latency,
        "langfuse_latency_seconds": None if latency is None else latency / 1000,
        "langfuse_time_to_first_token": _ms(row["start_time"], row["completion_start_time"]),
        "langfuse_release": row["release"],
        "langfuse_version": row["version"],
        "langfuse_model": row["provided_model_name"],
        "langfuse_level": row["level"],
        "langfuse_type": row["type"],
        "langfuse_tags": list(row["tags"]),
        "langfuse_environment": row["environment"],
        "langfuse_event_version": "1.0.0",
        "$session_id": session or None,
        "$geoip_disable": True,
    })
    if user and user_url:
        props["$set"] = {"langfuse_user_url": user_url}
    else:
        props["$process_person_profile"] = False
    return {"event": "langfuse observation", "distinct_id": user or event_uuid, "uuid": event_uuid,
            "timestamp": _iso(row["start_time"]), "properties": props}
