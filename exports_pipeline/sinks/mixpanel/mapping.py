"""One Mixpanel event per span, rendered by ClickHouse: the SQL and the few rules Python must know.

The mapping is Langfuse's events-table transformer (`worker/src/features/mixpanel/transformers.ts` over
`getEventsForAnalyticsIntegrations`, langfuse-exports §5, §11.4), so an event Langfuse sent and the same
event sent by us carry the same `$insert_id` and deduplicate at Mixpanel. ClickHouse writes each event as
one finished JSON line (UUIDv5 included): building a Python dict per row would cap the sync far below the
30,000 events/s target, so Python only cuts lines into requests (`deliver.py`).

Where we differ from Langfuse, on purpose:
- `ip: 0` on every event: without it Mixpanel geolocates the event to the exporter's own address
  (docs.mixpanel.com/reference/import-events, "GeoIP Enrichment": "set the value of ip to 0 and our API
  will skip the geolocation parsing").
- `langfuse_latency_seconds` beside Langfuse's `langfuse_latency` (milliseconds for observations, seconds
  for traces at Langfuse: one unit to chart by).
- Mixpanel's per-event limits are met before sending (Mixpanel itself would silently cut strings): every
  string is cut to 255 characters (code points), `langfuse_tags` to 254 items, invalid UTF-8 is replaced
  by U+FFFD (Mixpanel rejects it); each line starts with a flag digit saying what was changed, so the
  delivery can count it without parsing JSON.
- Numbers are JSON numbers (Langfuse's driver quotes 64-bit integers); `timestamp` is ISO-8601 UTC with
  microseconds like every export of this project (Langfuse forwards ClickHouse's default text).
- `langfuse_url` / `langfuse_user_url` only when a Langfuse base URL is configured, and
  `langfuse_project_name` only when the name is known (the events table holds no project names);
  Langfuse always sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from exports_pipeline.events.queries import SORT_KEY, WINDOW_FILTER, qualified_table
from exports_pipeline.windows import Window

EVENT_NAME = "[Langfuse] Observation"
# Langfuse's Mixpanel namespace (PostHog's is another), so both senders produce the same `$insert_id`.
INSERT_ID_NAMESPACE = uuid.UUID("8f7c3e42-9a1b-4d5f-8e2a-1c6b9d3f4e7a")
# Langfuse's MIXPANEL_BAD_DISTINCT_IDS: Mixpanel's documented disallowed values plus `lmy47d` (an Android
# build id that devices report as their id). Compared after JavaScript's trim() and lower-casing.
DENIED_DISTINCT_IDS = (
    "undefined", "null", "nil", "none", "unknown", "n/a", "na", "anon", "anonymous", "false", "true", "0", "-1",
    "00000000-0000-0000-0000-000000000000", "<nil>", "[]", "{}", "lmy47d",
)
# The characters JavaScript's String.prototype.trim() removes (ECMAScript WhiteSpace + LineTerminator).
JS_WHITESPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
                "\u2028\u2029\u202f\u205f\u3000\ufeff"
SESSION_METADATA_KEY = "$mixpanel_session_id"
EVENT_VERSION = "1.0.0"

# Mixpanel's per-event limits (import-events "High-level requirements"; strings: "Common Issues").
STRING_MAX_CHARS = 255
ARRAY_MAX_ITEMS = 254  # "fewer than 255 elements"
EVENT_MAX_BYTES = 1_000_000  # "smaller than 1MB of uncompressed JSON"
PROPERTIES_MAX = 254  # "fewer than 255 properties"

# The flag digit that starts each rendered line (a bit set): what had to change for Mixpanel's limits.
CUT_STRING = 1
CUT_ARRAY = 2
REPAIRED_UTF8 = 4

_TRIM_RE = "^[{ws}]+|[{ws}]+$".format(ws="".join(f"\\x{{{ord(c):04X}}}" for c in JS_WHITESPACE))
# Text formatting of the whole line, in the SQL: numbers unquoted, URLs unescaped.
JSON_SETTINGS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_escape_forward_slashes": 0,
    "output_format_decimal_trailing_zeros": 0,
}


def insert_id(project_id: str, span_id: str) -> str:
    """`$insert_id` as Langfuse computes it: UUIDv5 of `"{project_id}-{span_id}"` in its namespace."""
    return str(uuid.uuid5(INSERT_ID_NAMESPACE, f"{project_id}-{span_id}"))


def is_denied_distinct_id(user_id: str | None) -> bool:
    """Langfuse's `isBadDistinctId`: missing, empty, or on the deny-list after trim and lower-casing."""
    return not user_id or user_id.strip(JS_WHITESPACE).lower() in DENIED_DISTINCT_IDS


def _s(expr: str) -> str:
    """A string property: valid UTF-8, at most STRING_MAX_CHARS characters, as JSON text."""
    return f"toJSONString(leftUTF8(toValidUTF8({expr}), {STRING_MAX_CHARS}))"


def _nullable_s(expr: str) -> str:
    """JavaScript's `x || null`: the empty string is null."""
    return f"if({expr} = '', 'null', {_s(expr)})"


def _nullable_number(expr: str) -> str:
    return f"ifNull(toJSONString({expr}), 'null')"


def _encode_component(expr: str) -> str:
    """JavaScript's encodeURIComponent: ClickHouse's encodeURLComponent also escapes `! * ' ( )`."""
    out = f"encodeURLComponent({expr})"
    for code, char in (("%21", "!"), ("%2A", "*"), ("%27", "\\'"), ("%28", "("), ("%29", ")")):
        out = f"replaceAll({out}, '{code}', '{char}')"
    return out


def _properties(*, with_urls: bool, with_project_name: bool) -> list[tuple[str, str, str | None]]:
    """(key, JSON value expression, condition for the key to be present) in Langfuse's property order."""
    urls = [
        ("langfuse_url", _s(f"concat({{langfuse_url:String}}, '/project/', {{project_id:String}}, '/traces/', "
                            f"{_encode_component('trace_id')}, '?observation=', {_encode_component('span_id')})"),
         None),
        ("langfuse_user_url", _s(f"concat({{langfuse_url:String}}, '/project/', {{project_id:String}}, '/users/', "
                                 f"{_encode_component('user_id')})"), "user_id != ''"),
    ] if with_urls else []
    name = [("langfuse_project_name", _s("{project_name:String}"), None)] if with_project_name else []
    return [
        ("time", "toString(toUnixTimestamp64Milli(start_time))", None),
        ("distinct_id", _s("if(valid_user, user_id, '')"), None),
        ("$insert_id", "toJSONString(insert_id)", None),
        ("$user_id", _s("user_id"), "valid_user"),
        ("session_id", _s("mp_session"), "mp_session != ''"),
        ("ip", "'0'", None),
        ("timestamp", "toJSONString(formatDateTime(start_time, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC'))", None),
        ("langfuse_observation_name", _s("name"), None),
        ("langfuse_trace_name", _nullable_s("trace_name_or_root"), None),
        ("langfuse_trace_id", _s("trace_id"), None),
        *urls,
        ("langfuse_id", _s("span_id"), None),
        ("langfuse_cost_usd", "toJSONString(cost_details['total'])", None),
        ("langfuse_input_units", "toJSONString(usage_details['input'])", None),
        ("langfuse_output_units", "toJSONString(usage_details['output'])", None),
        ("langfuse_total_units", "toJSONString(usage_details['total'])", None),
        ("langfuse_session_id", _s("session_id"), None),
        ("langfuse_project_id", _s("{project_id:String}"), None),
        *name,
        ("langfuse_user_id", _nullable_s("user_id"), None),
        ("langfuse_latency", _nullable_number("latency_ms"), None),
        ("langfuse_latency_seconds", _nullable_number("latency_ms / 1000"), None),
        ("langfuse_time_to_first_token", _nullable_number("ttft_ms"), None),
        ("langfuse_release", _s("release"), None),
        ("langfuse_version", _s("version"), None),
        ("langfuse_model", _s("provided_model_name"), None),
        ("langfuse_level", _s("level"), None),
        ("langfuse_type", _s("type"), None),
        ("langfuse_tags", f"toJSONString(arrayMap(t -> leftUTF8(toValidUTF8(t), {STRING_MAX_CHARS}), "
                          f"arraySlice(tags, 1, {ARRAY_MAX_ITEMS})))", None),
        ("langfuse_environment", _s("environment"), None),
        ("langfuse_event_version", "toJSONString({event_version:String})", None),
    ]


# Every string a property carries, for the flag (cut, or repaired).
_FLAGGED_STRINGS = ("name", "trace_name_or_root", "trace_id", "span_id", "user_id", "session_id", "mp_session",
                    "release", "version", "provided_model_name", "level", "type", "environment")

_WITH = f"""
    user_id != '' AND lowerUTF8(replaceRegexpAll(user_id, {{trim_re:String}}, ''))
        NOT IN {{denied_ids:Array(String)}} AS valid_user,
    mapFromArrays(arrayReverse(metadata_names), arrayReverse(metadata_values))[{{session_key:String}}] AS mp_session0,
    if(mp_session0 != '', mp_session0, session_id) AS mp_session,
    ifNull(COALESCE(nullIf(trace_name, ''), if(parent_span_id = '' OR is_app_root, nullIf(name, ''), NULL)), '')
        AS trace_name_or_root,
    if(isNull(end_time), NULL, date_diff('millisecond', start_time, end_time)) AS latency_ms,
    if(isNull(completion_start_time), NULL, date_diff('millisecond', start_time, completion_start_time)) AS ttft_ms,
    SHA1(concat(unhex({{namespace_hex:String}}), {{project_id:String}}, '-', span_id)) AS id_hash,
    UUIDNumToString(toFixedString(concat(
        substring(id_hash, 1, 6),
        char(bitOr(bitAnd(reinterpretAsUInt8(substring(id_hash, 7, 1)), 15), 80)),
        substring(id_hash, 8, 1),
        char(bitOr(bitAnd(reinterpretAsUInt8(substring(id_hash, 9, 1)), 63), 128)),
        substring(id_hash, 10, 7)), 16)) AS insert_id,
    [{", ".join(_FLAGGED_STRINGS)}] AS flagged_strings
"""
# UUIDv5 (RFC 4122 §4.3): SHA-1 over namespace bytes || name, first 16 bytes, version nibble 5 in byte 6,
# variant bits 10 in byte 8; UUIDNumToString formats the bytes in order.

_FLAG = (
    f"toString(if(arrayExists(s -> lengthUTF8(s) > {STRING_MAX_CHARS}, flagged_strings) "
    f"OR arrayExists(t -> lengthUTF8(t) > {STRING_MAX_CHARS}, arraySlice(tags, 1, {ARRAY_MAX_ITEMS})), "
    f"{CUT_STRING}, 0) + if(length(tags) > {ARRAY_MAX_ITEMS}, {CUT_ARRAY}, 0) "
    f"+ if(NOT arrayAll(s -> isValidUTF8(s), arrayConcat(flagged_strings, tags)), {REPAIRED_UTF8}, 0))"
)


def _json_line(properties: list[tuple[str, str, str | None]]) -> str:
    parts = []
    for i, (key, value, condition) in enumerate(properties):
        sep = "" if i == 0 else ","
        piece = f"'{sep}\"{key}\":', {value}"
        parts.append(f"if({condition}, concat({piece}), '')" if condition else piece)
    body = ", ".join(parts)
    return f"concat('{{\"event\":', toJSONString({{event_name:String}}), ',\"properties\":{{', {body}, '}}}}')"


def window_events_sql(table: str, *, with_urls: bool = False, with_project_name: bool = False) -> str:
    """The window's events, one line each: `<flag>\\t<event JSON>`, in the table's sorting-key order (a
    re-run sends identical requests). Half-open window, FINAL, deleted rows excluded, one project."""
    properties = _properties(with_urls=with_urls, with_project_name=with_project_name)
    if len(properties) > PROPERTIES_MAX:  # fixed at import time, checked here so a new property cannot slip by
        raise AssertionError(f"{len(properties)} properties exceed Mixpanel's {PROPERTIES_MAX}")
    return (
        f"WITH {_WITH} SELECT {_FLAG} AS flag, {_json_line(properties)} AS event "
        f"FROM {qualified_table(table)} FINAL WHERE {WINDOW_FILTER} ORDER BY {SORT_KEY}"
    )


def window_events_parameters(project_id: str, window: Window, *, langfuse_url: str | None = None,
                             project_name: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "project_id": project_id, "start": window.start, "end": window.end,
        "trim_re": _TRIM_RE, "denied_ids": list(DENIED_DISTINCT_IDS), "session_key": SESSION_METADATA_KEY,
        "namespace_hex": INSERT_ID_NAMESPACE.hex, "event_name": EVENT_NAME, "event_version": EVENT_VERSION,
    }
    if langfuse_url:
        params["langfuse_url"] = langfuse_url.rstrip("/")
    if project_name:
        params["project_name"] = project_name
    return params


def flag_counts(flags: Mapping[int, int]) -> dict[str, int]:
    """Events per kind of change, from a count of lines per flag digit."""
    return {
        "strings_cut": sum(n for f, n in flags.items() if f & CUT_STRING),
        "arrays_cut": sum(n for f, n in flags.items() if f & CUT_ARRAY),
        "utf8_repaired": sum(n for f, n in flags.items() if f & REPAIRED_UTF8),
        "events_cut": sum(n for f, n in flags.items() if f),
    }
