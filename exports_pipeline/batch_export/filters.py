"""Langfuse's events-table filter JSON and search, validated here and compiled to bound ClickHouse SQL.

A filter taken from Langfuse's UI must work unchanged, so the input is Langfuse's own shape (an array of
`{column, type, operator, value, key?}`, `packages/shared/src/interfaces/filters.ts`) with its column ids
(`eventsTable.ts`, also matched by display name and the aliases of `mapEventsTable.ts`). Where Langfuse
silently drops or mis-reads a condition, this module refuses it with a message instead, because an export
that quietly ignores part of its filter is worse than no export:

- conditions on data this project does not have (scores, comments) and `positionInTrace` are refused;
- a value of the wrong shape, an operator its type lacks, a type its column cannot take: refused, naming
  the condition by its position (#1 is the first), column and operator.

Semantics (the SQL below and the tests' independent Python evaluation both follow these):

- Every value is a server-side parameter; user text never becomes SQL. String operators are literal and
  case-sensitive (`position`/`startsWith`/`endsWith`: no LIKE pattern, so `%`, `_`, `\\` are plain text).
- A NULL value (no trace name, no end time, no `total` cost, a root's parent) matches nothing but
  `is null`. `is null` on a text column also matches '' (an unset string is stored as ''), on an array
  column the empty array, on `metadata` a row without metadata.
- `latency` and `timeToFirstToken` are seconds in a condition, compared exactly with the millisecond
  difference the file carries (`latencyMs`): `latency >= 2.5` is `latencyMs >= 2500`.
- Numbers compare exactly as `Decimal(76, 30)` (Langfuse binds `Decimal64(12)`, which overflows for
  large token counts). `metadata` (`stringObject`/`numberObject`) needs the key to be present and reads
  the key's first value (the one the file's `metadata` map keeps); for `numberObject` the value must be a
  plain decimal (`-?digits[.digits]`), anything else does not match.
- Search (`SEARCH_TYPES`): `id` looks in span, trace, user and session ids and the span and trace names;
  `content` in input and output, `input`/`output` in one of them; case-insensitive, the text matched
  literally. For input/output the `\\uXXXX`-escaped form of non-ASCII text matches too, as in Langfuse
  (SDKs serialising with `ensure_ascii` store that form).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exports_pipeline.errors import ConfigError

# ------------------------------------------------------------------------- expressions (table alias `e`)
# Shared with query.py, so a filter and the file read a column through the same expression.

#: Langfuse's trace name: the denormalised trace name, else the root span's own name, else NULL.
TRACE_NAME_SQL = ("COALESCE(nullIf(e.trace_name, ''), "
                  "if((e.parent_span_id = '' OR e.is_app_root), nullIf(e.name, ''), NULL))")
#: NULL when the span has no `total` cost (the table's `total_cost` alias says 0 there).
TOTAL_COST_SQL = "if(mapContains(e.cost_details, 'total'), e.cost_details['total'], NULL)"
LATENCY_MS_SQL = "if(isNull(e.end_time), NULL, date_diff('millisecond', e.start_time, e.end_time))"
TTFT_MS_SQL = ("if(isNull(e.completion_start_time), NULL, "
               "date_diff('millisecond', e.start_time, e.completion_start_time))")
PARENT_ID_SQL = "nullIf(e.parent_span_id, '')"
IS_ROOT_SQL = "(e.parent_span_id = '' OR e.is_app_root)"


def _key_sum(key: str, column: str) -> str:
    return f"arraySum(mapValues(mapFilter((k, v) -> positionCaseInsensitive(k, '{key}') > 0, {column})))"


def _meta_value(name: str) -> str:
    return f"e.metadata_values[indexOf(e.metadata_names, '{name}')]"


_NUMERIC_VALUE_RE = "'^-?[0-9]+([.][0-9]+)?$'"  # a plain decimal; our own literal, no user text

# ------------------------------------------------------------------------------------- the column registry


@dataclass(frozen=True)
class FilterColumn:
    """One filterable column: Langfuse's id, display name and type, and its expression on `events_full`.

    `scale` multiplies a condition's number before it is compared with `sql` (seconds -> milliseconds).
    """

    id: str
    name: str
    type: str
    sql: str
    scale: int = 1
    aliases: tuple[str, ...] = ()


def _c(id: str, name: str, type: str, sql: str, **kw: Any) -> FilterColumn:
    return FilterColumn(id, name, type, sql, **kw)


FILTER_COLUMNS: tuple[FilterColumn, ...] = (
    _c("id", "ID", "stringOptions", "e.span_id"),
    _c("traceId", "Trace ID", "string", "e.trace_id"),
    _c("startTime", "Start Time", "datetime", "e.start_time"),
    _c("endTime", "End Time", "datetime", "e.end_time"),
    _c("name", "Name", "stringOptions", "e.name"),
    _c("type", "Type", "stringOptions", "e.type"),
    _c("environment", "Environment", "stringOptions", "e.environment", aliases=("traceEnvironment",)),
    _c("ingestionApiKey", "API Key", "stringOptions", "e.ingestion_api_key"),
    _c("ingestionSdkName", "SDK Name", "stringOptions", "e.ingestion_sdk_name"),
    _c("ingestionSdkVersion", "SDK Version", "stringOptions", "e.ingestion_sdk_version"),
    _c("ingestionSource", "Ingestion Source", "stringOptions", "e.source"),
    _c("version", "Version", "string", "e.version"),
    _c("release", "Release", "string", "e.release"),
    _c("userId", "User ID", "string", "e.user_id"),
    _c("sessionId", "Session ID", "string", "e.session_id"),
    _c("traceName", "Trace Name", "stringOptions", TRACE_NAME_SQL),
    _c("level", "Level", "stringOptions", "e.level"),
    _c("statusMessage", "Status Message", "string", "e.status_message"),
    _c("promptName", "Prompt Name", "stringOptions", "e.prompt_name"),
    _c("promptVersion", "Prompt Version", "number", "e.prompt_version"),
    _c("modelId", "Model ID", "stringOptions", "e.model_id"),
    _c("providedModelName", "Provided Model Name", "stringOptions", "e.provided_model_name", aliases=("model",)),
    _c("totalCost", "Cost ($)", "number", TOTAL_COST_SQL, aliases=("Total Cost ($)",)),
    _c("inputTokens", "Input Tokens", "number", _key_sum("input", "e.usage_details")),
    _c("outputTokens", "Output Tokens", "number", _key_sum("output", "e.usage_details")),
    _c("totalTokens", "Total Tokens", "number",
       "if(mapContains(e.usage_details, 'total'), e.usage_details['total'], NULL)", aliases=("tokens",)),
    _c("inputCost", "Input Cost ($)", "number", _key_sum("input", "e.cost_details")),
    _c("outputCost", "Output Cost ($)", "number", _key_sum("output", "e.cost_details")),
    _c("latency", "Latency (s)", "number", LATENCY_MS_SQL, scale=1000),
    _c("timeToFirstToken", "Time To First Token (s)", "number", TTFT_MS_SQL, scale=1000),
    _c("tokensPerSecond", "Tokens per second", "number",
       f"({_key_sum('output', 'e.usage_details')} / (date_diff('millisecond', e.start_time, e.end_time) / 1000))"),
    _c("input", "Input", "string", "e.input"),
    _c("output", "Output", "string", "e.output"),
    _c("metadata", "Metadata", "stringObject", "e.metadata_names"),
    _c("evaluatorId", "Evaluator ID", "stringOptions", _meta_value("evaluator_id")),
    _c("ruleId", "Rule ID", "stringOptions",
       f"if(notEmpty({_meta_value('evaluation_rule_id')}), {_meta_value('evaluation_rule_id')}, "
       f"{_meta_value('job_configuration_id')})"),
    _c("traceTags", "Trace Tags", "arrayOptions", "e.tags", aliases=("tags", "Tags")),
    _c("hasParentObservation", "Has Parent Observation", "boolean", "(e.parent_span_id != '')"),
    _c("isRootObservation", "Is Root Observation", "boolean", IS_ROOT_SQL),
    _c("hasInput", "Has Input", "boolean", "(e.input != '')"),
    _c("hasOutput", "Has Output", "boolean", "(e.output != '')"),
    _c("parentObservationId", "Parent Observation ID", "string", PARENT_ID_SQL),
    _c("experimentDatasetId", "Experiment Dataset ID", "stringOptions", "e.experiment_dataset_id"),
    _c("experimentId", "Experiment ID", "stringOptions", "e.experiment_id"),
    _c("experimentName", "Experiment Name", "stringOptions", "e.experiment_name"),
    _c("isExperimentItemRootSpan", "Is Experiment Item Root Span", "boolean",
       "(e.experiment_item_root_span_id = e.span_id)"),
    _c("toolNames", "Available Tool Names", "arrayOptions", "mapKeys(e.tool_definitions)"),
    _c("calledToolNames", "Called Tool Names", "arrayOptions", "e.tool_call_names"),
    _c("toolDefinitions", "Available Tools", "number", "length(mapKeys(e.tool_definitions))"),
    _c("toolCalls", "Tool Calls", "number", "length(e.tool_calls)"),
)

#: Langfuse columns whose data lives outside the events table: refused with this reason, never ignored.
UNAVAILABLE: dict[str, str] = {
    **{c: "scores are not part of this project's data (only the events table is exported)"
       for c in ("scores", "scores_avg", "score_categories", "score_booleans", "trace_scores_avg",
                 "trace_score_categories", "trace_score_booleans", "Scores", "Scores (numeric)",
                 "Scores (categorical)", "Scores (boolean)", "Trace Scores (numeric)",
                 "Trace Scores (categorical)", "Trace Scores (boolean)")},
    **{c: "comments are not part of this project's data (they live in Langfuse's Postgres)"
       for c in ("commentCount", "commentContent", "Comment Count", "Comment Content")},
}

_BY_ANY_NAME: dict[str, FilterColumn] = {}
for _col in FILTER_COLUMNS:
    for _name in (_col.id, _col.name, *_col.aliases):
        if _BY_ANY_NAME.setdefault(_name, _col) is not _col:  # pragma: no cover - guards an editing mistake
            raise RuntimeError(f"filter column name {_name!r} is used twice")


def filter_column(name: str) -> FilterColumn | None:
    """The column a condition names (by id, display name or alias), None when unknown."""
    return _BY_ANY_NAME.get(name)


# --------------------------------------------------------------------------------- types and operators

#: Langfuse's `filterOperators` (positionInTrace left out: refused below).
OPERATORS: dict[str, tuple[str, ...]] = {
    "datetime": (">", "<", ">=", "<="),
    "string": ("=", "contains", "does not contain", "starts with", "ends with"),
    "stringOptions": ("any of", "none of"),
    "categoryOptions": ("any of", "none of"),
    "arrayOptions": ("any of", "none of", "all of"),
    "number": ("=", ">", "<", ">=", "<="),
    "stringObject": ("=", "contains", "does not contain", "starts with", "ends with"),
    "numberObject": ("=", ">", "<", ">=", "<="),
    "booleanObject": ("=", "<>"),
    "boolean": ("=", "<>"),
    "null": ("is null", "is not null"),
}

#: Which condition types a column of each Langfuse column type takes (Langfuse's
#: `COMPATIBLE_FILTER_TYPES`, plus `null` everywhere but booleans and `numberObject` on metadata).
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "string": ("string", "stringOptions", "null"),
    "stringOptions": ("string", "stringOptions", "null"),
    "arrayOptions": ("arrayOptions", "stringOptions", "null"),
    "datetime": ("datetime", "null"),
    "number": ("number", "null"),
    "boolean": ("boolean",),
    "stringObject": ("stringObject", "numberObject", "null"),
}

_KEYED = ("stringObject", "numberObject")
NUMBER_PARAM_TYPE = "Decimal(76, 30)"
_NUMBER_SCALE = 30
_NUMBER_MAX = Decimal(10) ** (76 - _NUMBER_SCALE)
DATETIME_MIN = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)  # DateTime64's range
DATETIME_MAX = dt.datetime(2299, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Condition:
    """One validated condition. `column` is the canonical Langfuse id; `value` is kept as JSON has it
    (an ISO string for datetimes, a JSON number for numbers) so `to_json` gives back a Langfuse filter."""

    index: int
    column: str
    type: str
    operator: str
    value: Any
    key: str | None = None

    @property
    def label(self) -> str:
        return f"filter condition #{self.index + 1} (column {self.column!r}, operator {self.operator!r})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column, "type": self.type, "operator": self.operator,
                               "value": self.value}
        if self.key is not None:
            out["key"] = self.key
        return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: {what}", field="filter")


def parse_filter(raw: str | list | None) -> list[Condition]:
    """Validate a Langfuse filter (JSON text or the decoded list; None or '' means no filter)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"filter is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              field="filter") from None
    if not isinstance(raw, list):
        raise ConfigError(f"filter must be a JSON array of conditions, got {type(raw).__name__}", field="filter")
    return [_parse_condition(i, item) for i, item in enumerate(raw)]


def _parse_condition(index: int, item: Any) -> Condition:
    where = f"filter condition #{index + 1}"
    if not isinstance(item, dict):
        raise _fail(where, f"must be an object with column, type, operator and value, got {_show(item)}")
    column_name, ftype, operator = item.get("column"), item.get("type"), item.get("operator")
    if not isinstance(column_name, str) or not column_name:
        raise _fail(where, "has no column")
    where = f"{where} (column {column_name!r}, operator {operator!r})"
    if column_name in UNAVAILABLE:
        raise _fail(where, f"{UNAVAILABLE[column_name]}; remove this condition")
    if ftype == "positionInTrace":
        raise _fail(where, "positionInTrace conditions are not supported by batch exports; remove this condition")
    if ftype in ("categoryOptions", "booleanObject"):
        raise _fail(where, f"{ftype} conditions apply to scores, which are not part of this project's data")
    if ftype not in OPERATORS:
        raise _fail(where, f"type {_show(ftype)} is not a Langfuse filter type ({', '.join(OPERATORS)})")
    col = filter_column(column_name)
    if col is None:
        raise _fail(where, f"unknown column; known columns: {', '.join(c.id for c in FILTER_COLUMNS)}")
    where = f"filter condition #{index + 1} (column {col.id!r}, operator {operator!r})"
    if ftype not in COMPATIBLE[col.type]:
        raise _fail(where, f"{col.id} is a {col.type} column and takes {' or '.join(COMPATIBLE[col.type])} "
                           f"conditions, not {ftype}")
    if operator == "matches":
        raise _fail(where, "full-text 'matches' is not supported; use 'contains'")
    if operator not in OPERATORS[ftype]:
        raise _fail(where, f"{ftype} conditions take the operators {', '.join(OPERATORS[ftype])}")
    key = item.get("key")
    if ftype in _KEYED:
        if not isinstance(key, str):
            raise _fail(where, f"{ftype} conditions need a key (the metadata name) as a string, got {_show(key)}")
    else:
        key = None
    value = item.get("value")
    _check_value(where, col, ftype, operator, value)
    return Condition(index, col.id, ftype, operator, value, key)


def _check_value(where: str, col: FilterColumn, ftype: str, operator: str, value: Any) -> None:
    if ftype in ("string", "stringObject"):
        if not isinstance(value, str):
            raise _fail(where, f"value must be a string, got {_show(value)}")
    elif ftype in ("stringOptions", "arrayOptions"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(where, f"value must be an array of strings, got {_show(value)}")
        if not value and (ftype == "stringOptions" or operator == "any of"):
            raise _fail(where, "value must name at least one option")
    elif ftype in ("number", "numberObject"):
        number_value(where, value, col.scale if ftype == "number" else 1)
    elif ftype == "datetime":
        datetime_value(where, value)
    elif ftype == "boolean":
        if not isinstance(value, bool):
            raise _fail(where, f"value must be true or false, got {_show(value)}")
    elif ftype == "null":
        if value not in ("", None):
            raise _fail(where, f"value must be \"\" (null conditions take no value), got {_show(value)}")


def number_value(where: str, value: Any, scale: int = 1) -> Decimal:
    """The exact decimal of a JSON number, times `scale`, within what `NUMBER_PARAM_TYPE` holds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"value must be a number, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(where, f"value must be a finite number, got {_show(value)}")
    number = (Decimal(value) if isinstance(value, int) else Decimal(repr(value))) * scale
    if abs(number) >= _NUMBER_MAX:
        raise _fail(where, f"value {_show(value)} is too large")
    if number.as_tuple().exponent < -_NUMBER_SCALE:  # type: ignore[operator]
        raise _fail(where, f"value {_show(value)} has more than {_NUMBER_SCALE} decimal places")
    return Decimal(format(number, "f"))  # plain digits: the text ClickHouse parses for the parameter


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def datetime_value(where: str, value: Any) -> dt.datetime:
    """An ISO-8601 timestamp with a zone (`...Z` as Langfuse sends it), or a date (UTC midnight)."""
    if not isinstance(value, str):
        raise _fail(where, f"value must be an ISO-8601 timestamp string like 2026-11-19T00:00:00.000Z, "
                           f"got {_show(value)}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _fail(where, f"value {_show(value)} is not an ISO-8601 timestamp like 2026-11-19T00:00:00.000Z") from None
    if parsed.tzinfo is None:
        if not _DATE_ONLY.match(value):
            raise _fail(where, f"value {_show(value)} has no time zone; add Z for UTC")
        parsed = parsed.replace(tzinfo=dt.UTC)
    parsed = parsed.astimezone(dt.UTC)
    if not DATETIME_MIN <= parsed <= DATETIME_MAX:
        raise _fail(where, f"value {_show(value)} is outside 1900-01-01..2299-12-31")
    return parsed


# ---------------------------------------------------------------------------------------------- search

SEARCH_TYPES = ("id", "content", "input", "output")
SEARCH_ID_COLUMNS = ("e.span_id", "e.name", "e.trace_name", "e.user_id", "e.session_id", "e.trace_id")


def validate_search(query: str | None, types: list[str] | None) -> tuple[str | None, list[str]]:
    """(query or None, the search types, deduplicated in the order given). With a query and no types,
    `id` (Langfuse's default); an explicitly empty list of types is refused, as in Langfuse."""
    if query is not None and not isinstance(query, str):
        raise ConfigError(f"search must be text, got {type(query).__name__}", field="search")
    if types is not None and (not isinstance(types, list | tuple) or not all(isinstance(t, str) for t in types)):
        raise ConfigError("search types must be a list of names", field="search_type")
    unknown = [t for t in (types or []) if t not in SEARCH_TYPES]
    if unknown:
        raise ConfigError(f"unknown search type {unknown[0]!r}; expected one of {', '.join(SEARCH_TYPES)}",
                          field="search_type")
    if not query:
        return None, []
    if types is not None and not types:
        raise ConfigError("at least one search type is required with a search", field="search_type")
    return query, list(dict.fromkeys(types or ["id"]))


def search_sql(query: str | None, types: list[str]) -> tuple[str, dict[str, Any]]:
    """One parenthesised predicate (OR over the types' columns), or '' without a query."""
    if not query:
        return "", {}
    params: dict[str, Any] = {"search": query}
    needles = ["{search:String}"]
    escaped = _ascii_escape(query)
    if escaped != query:
        params["search_escaped"] = escaped
        needles.append("{search_escaped:String}")

    def hit(column: str, forms: list[str]) -> str:
        return " OR ".join(f"positionCaseInsensitiveUTF8({column}, {n}) > 0" for n in forms)

    io_columns = {"content": ("e.input", "e.output"), "input": ("e.input",), "output": ("e.output",)}
    parts: list[str] = []
    for t in types:
        if t == "id":
            parts += [hit(c, needles[:1]) for c in SEARCH_ID_COLUMNS]
        else:
            parts += [hit(c, needles) for c in io_columns[t]]
    return "(" + " OR ".join(parts) + ")", params


def _ascii_escape(text: str) -> str:
    """Non-ASCII code points as \\uXXXX (astral ones as a UTF-16 surrogate pair); ASCII unchanged."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp < 0x80:
            out.append(ch)
        elif cp <= 0xFFFF:
            out.append(f"\\u{cp:04x}")
        else:
            v = cp - 0x10000
            out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
    return "".join(out)


# ------------------------------------------------------------------------------------------ compilation

_STRING_OPS = {
    "=": "({x} = {p})",
    "contains": "(position({x}, {p}) > 0)",
    "does not contain": "(position({x}, {p}) = 0)",
    "starts with": "startsWith({x}, {p})",
    "ends with": "endsWith({x}, {p})",
}
_COMPARE = {"=": "=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
_META_VALUE = "e.metadata_values[indexOf(e.metadata_names, {k})]"


def _absent(col: FilterColumn) -> str:
    """What `is null` means for the column: NULL, or the empty value its type stores for 'unset'."""
    if col.type == "stringObject":
        return "empty(e.metadata_names)"
    if col.type == "arrayOptions":
        return f"empty({col.sql})"
    if col.type in ("string", "stringOptions"):
        return f"(ifNull({col.sql}, '') = '')"
    return f"isNull({col.sql})"


def condition_sql(cond: Condition, name: str) -> tuple[str, dict[str, Any]]:
    """One parenthesised predicate for `cond`, its values bound as parameters named `name`, `name_k`."""
    col = _BY_ANY_NAME[cond.column]
    x, t, op, v = col.sql, cond.type, cond.operator, cond.value
    p = f"{{{name}:String}}"
    if t == "null":
        sql = _absent(col) if op == "is null" else f"NOT {_absent(col)}"
        return f"({sql})", {}
    if t == "string":
        return "(" + _STRING_OPS[op].format(x=x, p=p) + ")", {name: v}
    if t in ("stringOptions", "arrayOptions"):
        arr = f"{{{name}:Array(String)}}"
        if col.type == "arrayOptions":
            sql = {"any of": f"hasAny({x}, {arr})", "none of": f"NOT hasAny({x}, {arr})",
                   "all of": f"hasAll({x}, {arr})"}[op]
        else:
            sql = f"{x} IN {arr}" if op == "any of" else f"{x} NOT IN {arr}"
        return f"({sql})", {name: list(v)}
    if t == "number":
        number = number_value(cond.label, v, col.scale)
        return f"({x} {_COMPARE[op]} {{{name}:{NUMBER_PARAM_TYPE}}})", {name: number}
    if t == "datetime":
        return f"({x} {op} {{{name}:DateTime64(6, 'UTC')}})", {name: datetime_value(cond.label, v)}
    if t == "boolean":
        return f"({x} {'=' if op == '=' else '!='} {{{name}:Bool}})", {name: v}
    k = f"{{{name}_k:String}}"
    value = _META_VALUE.format(k=k)
    has_key = f"has(e.metadata_names, {k})"
    if t == "stringObject":
        return f"({has_key} AND " + _STRING_OPS[op].format(x=value, p=p) + ")", {name: v, f"{name}_k": cond.key}
    # numberObject: the key's value must be a plain decimal to compare at all
    number = number_value(cond.label, v)
    sql = (f"({has_key} AND match({value}, {_NUMERIC_VALUE_RE}) AND "
           f"toDecimal256OrNull({value}, {_NUMBER_SCALE}) {_COMPARE[op]} {{{name}:{NUMBER_PARAM_TYPE}}})")
    return sql, {name: number, f"{name}_k": cond.key}


def filter_sql(conditions: list[Condition]) -> tuple[str, dict[str, Any]]:
    """All conditions ANDed, each parenthesised, parameters `f0`, `f1`, ...; '' without conditions."""
    parts, params = [], {}
    for i, cond in enumerate(conditions):
        sql, p = condition_sql(cond, f"f{i}")
        parts.append(sql)
        params.update(p)
    return " AND ".join(parts), params
