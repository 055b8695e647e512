"""The column registry of Langfuse's `events_full` table: one ordered source of truth.

The list follows Langfuse migration `0039_create_events_full` (unclustered) column for column, followed
by the three columns that migration `0042` ALTERs in (reference: langfuse-exports.md §1.1): the table as
a deployment that ran both has it. `ddl.py` renders the CREATE TABLE from this tuple, and a test compares
`system.columns` of the created table with it. A deployed table may differ (0042 not run, columns of
later migrations): what a run exports is the live table's columns (`events/schema.py`); the registry
says which columns are expected, so a run can report the ones a table lacks.

Type strings are written exactly as ClickHouse normalises them in `system.columns.type`
(`Decimal(18, 12)` with a space, `Bool`, `LowCardinality(String)` ...), because that is what the
test compares against and what `DESCRIBE`/the result metadata of a query return at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["plain", "default", "materialized", "alias"]

_KIND_SQL = {"plain": "", "default": "DEFAULT", "materialized": "MATERIALIZED", "alias": "ALIAS"}


@dataclass(frozen=True)
class Column:
    """One column of `events_full`.

    `expression` is the DEFAULT / MATERIALIZED / ALIAS expression text (empty for plain columns), written
    as ClickHouse shows it in `system.columns.default_expression`. `codec` is the CODEC clause argument
    (e.g. `ZSTD(3)`), empty when the column uses the table default.
    """

    name: str
    ch_type: str
    kind: Kind = "plain"
    expression: str = ""
    codec: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KIND_SQL:
            raise ValueError(f"unknown column kind {self.kind!r} for {self.name}")
        if (self.kind == "plain") != (self.expression == ""):
            raise ValueError(f"column {self.name}: kind {self.kind!r} and expression {self.expression!r} disagree")

    # ---- what the column is in the table
    @property
    def default_kind(self) -> str:
        """The value of `system.columns.default_kind` for this column ('' for plain columns)."""
        return _KIND_SQL[self.kind]

    @property
    def is_stored(self) -> bool:
        """Stored on disk (everything but ALIAS)."""
        return self.kind != "alias"

    @property
    def is_insertable(self) -> bool:
        """Can be named in an INSERT column list (plain and DEFAULT columns)."""
        return self.kind in ("plain", "default")

    def ddl(self) -> str:
        """The column definition line of a CREATE TABLE."""
        parts = [f"`{self.name}`", self.ch_type]
        if self.kind != "plain":
            parts += [_KIND_SQL[self.kind], self.expression]
        if self.codec:
            parts.append(f"CODEC({self.codec})")
        return " ".join(parts)

    # ---- type classification, delegated to the functions below
    @property
    def nullable(self) -> bool:
        return is_nullable(self.ch_type)

    @property
    def low_cardinality(self) -> bool:
        return is_low_cardinality(self.ch_type)

    @property
    def base_type(self) -> str:
        return base_type(self.ch_type)


_DEC = "Decimal(18, 12)"
_USAGE_MAP = "Map(LowCardinality(String), UInt64)"
_COST_MAP = f"Map(LowCardinality(String), {_DEC})"


def _cost_filter(*needles: str) -> str:
    """Langfuse's calculated_*_cost expression, in the normalised form system.columns shows."""
    conds = [f"(positionCaseInsensitive(x.1, '{n}') > 0)" for n in needles]
    body = conds[0] if len(conds) == 1 else "(" + " OR ".join(conds) + ")"
    return f"arraySum(mapValues(mapFilter(x -> {body}, cost_details)))"


COLUMNS: tuple[Column, ...] = (
    Column("project_id", "String"),
    Column("trace_id", "String"),
    Column("span_id", "String"),
    Column("parent_span_id", "String"),
    Column("start_time", "DateTime64(6)"),
    Column("end_time", "Nullable(DateTime64(6))"),
    # core properties
    Column("name", "String"),
    Column("type", "LowCardinality(String)"),
    Column("environment", "LowCardinality(String)", "default", "'default'"),
    Column("version", "String"),
    Column("release", "String"),
    Column("trace_name", "String"),
    Column("user_id", "String"),
    Column("session_id", "String"),
    Column("tags", "Array(String)"),
    Column("level", "LowCardinality(String)"),
    Column("status_message", "String"),
    Column("completion_start_time", "Nullable(DateTime64(6))"),
    Column("is_app_root", "Bool", "default", "false"),
    # updateable properties
    Column("bookmarked", "Bool", "default", "false"),
    Column("public", "Bool", "default", "false"),
    # prompt
    Column("prompt_id", "String"),
    Column("prompt_name", "String"),
    Column("prompt_version", "Nullable(UInt16)"),
    # model
    Column("model_id", "String"),
    Column("provided_model_name", "String"),
    Column("model_parameters", "String"),
    # usage and cost
    Column("provided_usage_details", _USAGE_MAP),
    Column("usage_details", _USAGE_MAP),
    Column("provided_cost_details", _COST_MAP),
    Column("cost_details", _COST_MAP),
    Column("calculated_input_cost", _DEC, "materialized", _cost_filter("input")),
    Column("calculated_output_cost", _DEC, "materialized", _cost_filter("output")),
    Column("calculated_total_cost", _DEC, "materialized", _cost_filter("input", "output")),
    Column("total_cost", _DEC, "alias", "cost_details['total']"),
    Column("usage_pricing_tier_id", "Nullable(String)"),
    Column("usage_pricing_tier_name", "Nullable(String)"),
    # tools
    Column("tool_definitions", "Map(String, String)"),
    Column("tool_calls", "Array(String)"),
    Column("tool_call_names", "Array(String)"),
    # I/O
    Column("input", "String", codec="ZSTD(3)"),
    Column("input_length", "UInt64", "materialized", "lengthUTF8(input)"),
    Column("output", "String", codec="ZSTD(3)"),
    Column("output_length", "UInt64", "materialized", "lengthUTF8(output)"),
    # metadata (parallel arrays)
    Column("metadata_names", "Array(String)"),
    Column("metadata_values", "Array(String)"),
    # experiment properties
    Column("experiment_id", "String"),
    Column("experiment_name", "String"),
    Column("experiment_metadata_names", "Array(String)"),
    Column("experiment_metadata_values", "Array(String)"),
    Column("experiment_description", "String"),
    Column("experiment_dataset_id", "String"),
    Column("experiment_item_id", "String"),
    Column("experiment_item_version", "Nullable(DateTime64(6))"),
    Column("experiment_item_expected_output", "String"),
    Column("experiment_item_metadata_names", "Array(String)"),
    Column("experiment_item_metadata_values", "Array(String)"),
    Column("experiment_item_root_span_id", "String"),
    # source metadata (instrumentation)
    Column("source", "LowCardinality(String)"),
    Column("service_name", "String"),
    Column("service_version", "String"),
    Column("scope_name", "String"),
    Column("scope_version", "String"),
    Column("telemetry_sdk_language", "LowCardinality(String)"),
    Column("telemetry_sdk_name", "String"),
    Column("telemetry_sdk_version", "String"),
    # generic props
    Column("blob_storage_file_path", "String"),
    Column("event_bytes", "UInt64"),
    Column("created_at", "DateTime64(6)", "default", "now()"),
    Column("updated_at", "DateTime64(6)", "default", "now()"),
    Column("event_ts", "DateTime64(6)"),
    Column("is_deleted", "UInt8"),
    # ingestion attribution (migration 0042)
    Column("ingestion_api_key", "String", "default", "''"),
    Column("ingestion_sdk_name", "LowCardinality(String)", "default", "'unknown'"),
    Column("ingestion_sdk_version", "LowCardinality(String)", "default", "'unknown'"),
)

_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
if len(_BY_NAME) != len(COLUMNS):  # pragma: no cover - guards against an editing mistake
    raise RuntimeError("duplicate column name in the events_full registry")

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

#: Columns on disk (plain + DEFAULT + MATERIALIZED), in table order. Note that `SELECT *` returns only
#: plain + DEFAULT columns (ClickHouse leaves MATERIALIZED and ALIAS out of `*` unless
#: `asterisk_include_materialized_columns` / `asterisk_include_alias_columns` are set), so every
#: reader must name its columns explicitly; use this tuple for checksums and table copies.
STORED_COLUMNS: tuple[Column, ...] = tuple(c for c in COLUMNS if c.is_stored)

#: Columns an INSERT may name (plain + DEFAULT); MATERIALIZED and ALIAS are computed by the server.
INSERT_COLUMNS: tuple[Column, ...] = tuple(c for c in COLUMNS if c.is_insertable)

#: The columns an export of a table of the registry's shape writes, in table order: every stored column
#: PLUS the ALIAS `total_cost`. (A run writes what the deployed table has, `events/schema.py`, which
#: exports every selectable column the same way; these are the ones it reports as missing when absent.)
#: Why total_cost is included: Langfuse's own events export (blob storage `observations_v2`, field group
#: `usage`) and the legacy observations export both write a `total_cost` field, and the PostHog/Mixpanel
#: mappings read the total cost; a consumer of a "full" file expects it. Because MATERIALIZED columns are
#: not in `SELECT *` either, the export query names its columns explicitly anyway, so the ALIAS costs one
#: more name in the list and nothing on disk. Its value is the table's own definition
#: `cost_details['total']`, which is 0 (not NULL) when the map has no 'total' key.
EXPORT_COLUMNS: tuple[Column, ...] = COLUMNS  # == STORED_COLUMNS + total_cost, in table order

EXPORT_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in EXPORT_COLUMNS)


def column(name: str) -> Column:
    """The registry entry of `name`; KeyError with the known names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"events_full has no column {name!r}") from None


# ------------------------------------------------------------------------------------ type classification
# All helpers take a ClickHouse type string as it appears in system.columns / query metadata.

_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")


def _unwrap(ch_type: str) -> tuple[str, set[str]]:
    wrappers: set[str] = set()
    t = ch_type.strip()
    while True:
        m = _WRAPPER.match(t)
        if not m:
            return t, wrappers
        wrappers.add(m.group(1))
        t = m.group(2).strip()


def base_type(ch_type: str) -> str:
    """The type without Nullable(...) / LowCardinality(...) wrappers: `Nullable(DateTime64(6))` → `DateTime64(6)`."""
    return _unwrap(ch_type)[0]


def is_nullable(ch_type: str) -> bool:
    return "Nullable" in _unwrap(ch_type)[1]


def is_low_cardinality(ch_type: str) -> bool:
    return "LowCardinality" in _unwrap(ch_type)[1]


def is_map(ch_type: str) -> bool:
    return base_type(ch_type).startswith("Map(")


def is_array(ch_type: str) -> bool:
    return base_type(ch_type).startswith("Array(")


def is_string(ch_type: str) -> bool:
    """String or FixedString (after unwrapping Nullable/LowCardinality)."""
    b = base_type(ch_type)
    return b == "String" or b.startswith("FixedString(")


def is_datetime(ch_type: str) -> bool:
    """DateTime or DateTime64(p[, tz]), Nullable or not."""
    b = base_type(ch_type)
    return b == "DateTime" or b.startswith("DateTime(") or b.startswith("DateTime64")


def is_datetime64(ch_type: str) -> bool:
    return base_type(ch_type).startswith("DateTime64")


def datetime_precision(ch_type: str) -> int:
    """Sub-second digits of a DateTime/DateTime64 type (0 for DateTime)."""
    b = base_type(ch_type)
    if not is_datetime(b):
        raise ValueError(f"not a DateTime type: {ch_type!r}")
    m = re.match(r"^DateTime64\((\d+)", b)
    return int(m.group(1)) if m else 0


def is_decimal(ch_type: str) -> bool:
    return base_type(ch_type).startswith("Decimal")


def decimal_scale(ch_type: str) -> int:
    """Scale of Decimal(P, S) / Decimal32|64|128|256(S)."""
    b = base_type(ch_type)
    m = re.match(r"^Decimal\(\s*\d+\s*,\s*(\d+)\s*\)$", b) or re.match(r"^Decimal(?:32|64|128|256)\(\s*(\d+)\s*\)$", b)
    if not m:
        raise ValueError(f"not a Decimal type: {ch_type!r}")
    return int(m.group(1))


def is_bool(ch_type: str) -> bool:
    return base_type(ch_type) == "Bool"


_INT = re.compile(r"^(U?)Int(8|16|32|64|128|256)$")


def is_integer(ch_type: str) -> bool:
    """Any (U)Int8..256 (Bool is NOT an integer here even though it is stored as UInt8)."""
    return bool(_INT.match(base_type(ch_type)))


def is_64bit_integer(ch_type: str) -> bool:
    """(U)Int64 and wider: ClickHouse's JSON formats quote these by default
    (`output_format_json_quote_64bit_integers`), and JavaScript cannot hold them exactly."""
    m = _INT.match(base_type(ch_type))
    return bool(m) and int(m.group(2)) >= 64


def is_unsigned(ch_type: str) -> bool:
    m = _INT.match(base_type(ch_type))
    return bool(m) and m.group(1) == "U"


def split_args(inner: str) -> list[str]:
    """Split the top-level comma-separated arguments of a type: `LowCardinality(String), Decimal(18, 12)`.
    Quoted text (Enum names, time zones, backquoted tuple element names) never splits or nests."""
    args: list[str] = []
    depth = 0
    quote = ""
    cur: list[str] = []
    escaped = False
    for ch in inner:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur or args:
        args.append("".join(cur).strip())
    return args


def map_types(ch_type: str) -> tuple[str, str]:
    """(key type, value type) of a Map type."""
    b = base_type(ch_type)
    if not b.startswith("Map("):
        raise ValueError(f"not a Map type: {ch_type!r}")
    k, v = split_args(b[len("Map(") : -1])
    return k, v


def array_element_type(ch_type: str) -> str:
    b = base_type(ch_type)
    if not b.startswith("Array("):
        raise ValueError(f"not an Array type: {ch_type!r}")
    return b[len("Array(") : -1].strip()


def columns_where(pred) -> tuple[Column, ...]:
    """Registry columns whose type string satisfies `pred` (e.g. `columns_where(is_map)`)."""
    return tuple(c for c in COLUMNS if pred(c.ch_type))
