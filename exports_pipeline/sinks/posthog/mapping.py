"""One PostHog event per span, rendered by ClickHouse as one JSON line: Langfuse's events-table mapping.

Why ClickHouse writes the JSON: a Python dict per row costs more than the whole rest of the pipeline
(architecture: 20k rows/s through pandas vs 200-450k rows/s native). So the query returns one String
column, `line`, holding the finished event object followed by a comma, and Python only slices the bytes
into requests (`deliver.py`). Every value goes through `toJSONString` (escaping, numbers, arrays, nulls),
every user value is a bound parameter, and the SQL text itself is built from constants only.

The mapping is Langfuse's (`getEventsForAnalyticsIntegrations` in packages/shared/src/server/repositories/
events.ts and `transformEventForPostHog` in worker/src/features/posthog/transformers.ts, HEAD 62751446):

- event `langfuse observation`, `uuid` = UUIDv5("{project_id}-{span_id}") in Langfuse's PostHog namespace
  (computed in SQL: SHA-1 over namespace bytes || name, version 5 and RFC 4122 variant bits set), so an
  event Langfuse sent and the same event sent here deduplicate at PostHog;
- `distinct_id` = the user id, else that uuid; `timestamp` = start_time (ISO-8601 UTC, microseconds);
- properties, in Langfuse's order: `timestamp`, `langfuse_observation_name`, `langfuse_trace_name` (trace
  name, else the root's own name, else null), `langfuse_trace_id`, `langfuse_url` and `langfuse_user_url`
  (only when `EXPORTS_LANGFUSE_URL` is set; the user URL only with a user), `langfuse_id`,
  `langfuse_cost_usd` (`cost_details['total']`), `langfuse_input_units` / `_output_units` / `_total_units`
  (`usage_details` input / output / total), `langfuse_session_id`, `langfuse_project_id`,
  `langfuse_project_name`, `langfuse_user_id` (null without a user), `langfuse_latency` and
  `langfuse_time_to_first_token` (milliseconds, as Langfuse sends them for observations), `langfuse_release`,
  `langfuse_version`, `langfuse_model` (provided model name), `langfuse_level`, `langfuse_type`,
  `langfuse_tags`, `langfuse_environment`, `langfuse_event_version` "1.0.0";
- `$session_id` from the first metadata value named `$posthog_session_id`;
- with a user and a user URL: `$set: {langfuse_user_url}`; otherwise `$process_person_profile: false`
  (an anonymous event: no person profile is created or updated).

Ours, beyond Langfuse's: `langfuse_latency_seconds` (Langfuse's trace events carry latency in seconds and
its observation events in milliseconds; `langfuse_latency` keeps Langfuse's milliseconds so existing
PostHog insights keep working, and the seconds field is the unit-consistent one); `$geoip_disable: true`
(what PostHog's server SDKs send by default, so events are not geolocated to the exporter's address);
`$session_id` is null, not "", when the metadata has no session id (Langfuse's `?? null` meant that, but a
missing ClickHouse map key reads as "").
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from exports_pipeline.events.queries import SORT_KEY, WINDOW_FILTER, qualified_table

EVENT_NAME = "langfuse observation"
# Langfuse's PostHog namespace (worker/src/features/posthog/transformers.ts, POSTHOG_UUID_NAMESPACE).
UUID_NAMESPACE = "0f6c91df-d035-4813-b838-9741ba38ef0b"
EVENT_VERSION = "1.0.0"
SESSION_METADATA_KEY = "$posthog_session_id"
# A window whose end is older than this is sent with `historical_migration: true` (PostHog routes such
# batches to its historical ingestion, which does not compete with live events).
HISTORICAL_AFTER = dt.timedelta(hours=48)

# Rendering settings, in the query's SETTINGS clause: 64-bit integers and decimals as JSON numbers,
# `/` unescaped, invalid UTF-8 replaced (PostHog rejects a body that is not UTF-8).
SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_escape_forward_slashes": 0,
    "output_format_json_validate_utf8": 1,
}


def _j(expr: str) -> str:
    """`expr` as JSON text (`null` for NULL: toJSONString of a NULL is NULL, not 'null')."""
    return f"ifNull(toJSONString({expr}), 'null')"


def _url_component(expr: str) -> str:
    """JavaScript's encodeURIComponent: ClickHouse's encodeURLComponent also escapes `! * ' ( )`."""
    out = f"encodeURLComponent({expr})"
    for escaped, char in (("%21", "!"), ("%2A", "*"), ("%27", "'"), ("%28", "("), ("%29", ")")):
        literal = "'\\''" if char == "'" else f"'{char}'"
        out = f"replaceAll({out}, '{escaped}', {literal})"
    return out


# UUIDv5 (RFC 4122 §4.3): SHA-1(namespace || name), first 16 bytes, version nibble 5, variant 10xx.
_SHA = "SHA1(concat(unhex({uuid_namespace:String}), {project_id:String}, '-', span_id))"
UUID_SQL = (
    "UUIDNumToString(toFixedString(concat("
    "substring(_sha, 1, 6), "
    "char(bitOr(bitAnd(reinterpretAsUInt8(substring(_sha, 7, 1)), 15), 80)), "
    "substring(_sha, 8, 1), "
    "char(bitOr(bitAnd(reinterpretAsUInt8(substring(_sha, 9, 1)), 63), 128)), "
    "substring(_sha, 10, 7)), 16))"
)
TIMESTAMP_SQL = "formatDateTime(start_time, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC')"
TRACE_NAME_SQL = "nullIf(if(trace_name != '', trace_name, if(parent_span_id = '' OR is_app_root, name, '')), '')"
LATENCY_MS_SQL = "if(isNull(end_time), NULL, date_diff('millisecond', start_time, end_time))"
TTFT_MS_SQL = "if(isNull(completion_start_time), NULL, date_diff('millisecond', start_time, completion_start_time))"
SESSION_SQL = f"nullIf(metadata_values[indexOf(metadata_names, '{SESSION_METADATA_KEY}')], '')"


def _url(kind: str, last: str) -> str:
    """`{base}/project/{project}/{kind}/{last}` with each path value URL-encoded (Langfuse's URLs)."""
    return ("concat({langfuse_url:String}, '/project/', " + _url_component("{project_id:String}")
            + f", '/{kind}/', " + last + ")")


TRACE_URL_SQL = _url("traces", _url_component("trace_id") + ", '?observation=', " + _url_component("span_id"))
USER_URL_SQL = _url("users", _url_component("user_id"))


def _properties(with_urls: bool) -> list[tuple[str, str]]:
    """(key, SQL of its JSON text) in Langfuse's order. Keys whose presence depends on the row
    (`langfuse_user_url`) carry SQL that renders the whole `,"key":value` piece (key given as "")."""
    props = [
        ("timestamp", "_ts_json"),
        ("langfuse_observation_name", _j("name")),
        ("langfuse_trace_name", _j(TRACE_NAME_SQL)),
        ("langfuse_trace_id", _j("trace_id")),
    ]
    if with_urls:
        props += [
            ("langfuse_url", _j(TRACE_URL_SQL)),
            ("", f"if(user_id != '', concat('{_key('langfuse_user_url')}', {_j(USER_URL_SQL)}), '')"),
        ]
    props += [
        ("langfuse_id", _j("span_id")),
        ("langfuse_cost_usd", _j("cost_details['total']")),
        ("langfuse_input_units", _j("usage_details['input']")),
        ("langfuse_output_units", _j("usage_details['output']")),
        ("langfuse_total_units", _j("usage_details['total']")),
        ("langfuse_session_id", _j("session_id")),
        ("langfuse_project_id", _j("{project_id:String}")),
        ("langfuse_project_name", _j("{project_name:Nullable(String)}")),
        ("langfuse_user_id", _j("nullIf(user_id, '')")),
        ("langfuse_latency", _j("_latency_ms")),
        ("langfuse_latency_seconds", _j("_latency_ms / 1000")),
        ("langfuse_time_to_first_token", _j(TTFT_MS_SQL)),
        ("langfuse_release", _j("release")),
        ("langfuse_version", _j("version")),
        ("langfuse_model", _j("provided_model_name")),
        ("langfuse_level", _j("level")),
        ("langfuse_type", _j("type")),
        ("langfuse_tags", _j("tags")),
        ("langfuse_environment", _j("environment")),
        ("langfuse_event_version", "'" + json.dumps(EVENT_VERSION) + "'"),
        ("$session_id", _j(SESSION_SQL)),
        ("$geoip_disable", "'true'"),
    ]
    if with_urls:
        # Langfuse sets `$set` only for a user with a user URL (there is none without EXPORTS_LANGFUSE_URL).
        person = (f"if(user_id != '', concat('{_key('$set')}{{\"langfuse_user_url\":', {_j(USER_URL_SQL)}, '}}'), "
                  f"'{_key('$process_person_profile')}false')")
    else:
        person = f"'{_key('$process_person_profile')}false'"
    return props + [("", person)]


def _key(name: str, first: bool = False) -> str:
    return ("" if first else ",") + json.dumps(name) + ":"


_DISTINCT_ID = _j("if(user_id != '', user_id, _uuid)")


def events_sql(table: str, *, with_urls: bool) -> str:
    """The window's events, one `line` per span: `{...event...},` (a trailing comma, so a request body is
    a run of lines with the last comma dropped). Latest versions (FINAL), deleted rows excluded, half-open
    window on start_time, one project, in the table's sort order (a re-run sends the same bytes)."""
    pieces: list[str] = []
    for i, (key, value) in enumerate(_properties(with_urls)):
        if key:
            pieces.append(f"'{_key(key, first=i == 0)}'")
        pieces.append(value)
    properties = "concat('{', " + ", ".join(pieces) + ", '}')"
    line = (
        "concat('{\"event\":" + json.dumps(EVENT_NAME) + ",\"distinct_id\":', " + _DISTINCT_ID
        + ", ',\"uuid\":\"', _uuid, '\",\"timestamp\":', _ts_json, ',\"properties\":', "
        + properties + ", '},')"
    )
    return (
        f"WITH {_SHA} AS _sha, {UUID_SQL} AS _uuid, toJSONString({TIMESTAMP_SQL}) AS _ts_json, "
        f"{LATENCY_MS_SQL} AS _latency_ms "
        f"SELECT {line} AS line FROM {qualified_table(table)} FINAL WHERE {WINDOW_FILTER} ORDER BY {SORT_KEY}"
    )


def count_sql(table: str) -> str:
    """The events a window holds (what the asset check compares with the events sent)."""
    return f"SELECT count() FROM {qualified_table(table)} FINAL WHERE {WINDOW_FILTER}"


@dataclass(frozen=True)
class MappingContext:
    """The per-run values the mapping binds: the project, its display name and Langfuse's base URL."""

    project_id: str
    project_name: str | None = None
    langfuse_url: str | None = None

    def parameters(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        params: dict[str, Any] = {
            "project_id": self.project_id, "start": start, "end": end, "project_name": self.project_name,
            "uuid_namespace": UUID_NAMESPACE.replace("-", ""),
        }
        if self.langfuse_url:
            params["langfuse_url"] = base_url(self.langfuse_url)
        return params


def base_url(url: str) -> str:
    """Langfuse's base: NEXTAUTH_URL without `/api/auth` (Langfuse strips it) and without a trailing `/`."""
    url = url.strip()
    if url.endswith("/api/auth"):
        url = url[: -len("/api/auth")]
    return url.rstrip("/")


def is_historical(window_end: dt.datetime, now: dt.datetime) -> bool:
    return now - window_end > HISTORICAL_AFTER


CUT_MARKER = "…[cut by exports_pipeline: {n} bytes]"


class EventTooLarge(ValueError):
    """An event stays over PostHog's cap with every text property cut (a giant user id): it cannot be sent
    as it is, and dropping it silently is not an option."""


def cut_event(line: bytes, cap: int, *, cost) -> bytes:
    """`line` (one event's JSON) with its largest text properties cut, each ending in `CUT_MARKER`, until
    `cost(event) <= cap`. Only this rare path parses an event in Python. Identity fields (event, uuid,
    distinct_id, timestamp, ids) are never cut: the event must still deduplicate and join."""
    event = json.loads(line)
    props = event["properties"]
    keep = {"timestamp", "langfuse_id", "langfuse_trace_id", "langfuse_project_id", "langfuse_user_id",
            "langfuse_event_version", "$session_id"}

    def render() -> bytes:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()

    out = render()
    while cost(out) > cap:
        texts = [(len(v.encode()), k) for k, v in props.items() if isinstance(v, str) and k not in keep]
        texts += [(len(t.encode()), ("langfuse_tags", i)) for i, t in enumerate(props.get("langfuse_tags") or [])
                  if isinstance(t, str)]
        texts = [t for t in texts if t[0] > 64]
        if not texts:
            raise EventTooLarge(f"event {event.get('uuid')} is {cost(out)} bytes with every text property cut "
                                f"(PostHog's cap is {cap}); its distinct id or ids are too large to send")
        size, key = max(texts, key=lambda t: t[0])
        excess = cost(out) - cap
        value = props[key] if isinstance(key, str) else props[key[0]][key[1]]
        raw = value.encode()
        # Each removed byte lowers the cost by at least one; the marker adds its own length back.
        marker = CUT_MARKER.format(n=size)
        keep_bytes = max(0, size - excess - len(marker.encode()) - 16)
        new = raw[:keep_bytes].decode("utf-8", errors="ignore") + CUT_MARKER.format(n=size - keep_bytes)
        if isinstance(key, str):
            props[key] = new
        else:
            props[key[0]][key[1]] = new
        out = render()
    return out
