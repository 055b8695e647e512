"""CREATE TABLE for Langfuse's `events_full`, rendered from the column registry.

The shape of a deployment that has run Langfuse's unclustered migrations up to `0043`:
`0039_create_events_full` creates the table (`ReplacingMergeTree(event_ts, is_deleted)`, monthly
partitions on `start_time`, the minute/trace-hash key, `SAMPLE BY xxHash32(trace_id)`, ZSTD(3) on
input/output, bloom-filter/minmax/text skip indexes, the table SETTINGS of §1.1);
`0042_add_events_ingestion_attribution_columns` then ALTERs in the three `ingestion_*` columns (so they
come last, as here) and `0043_add_events_metadata_ngram_index` ALTERs in the ngram index
`idx_ngram_metadata_values`. Langfuse keeps 0042 and 0043 as separate ALTER migrations (0039 does not
contain them), so a deployment that has not run 0042 lacks the three columns: exports read the live
table's columns (`events/schema.py`) instead of assuming this shape. We create the end state in one
statement because dev, demo and tests need only the result.

Measured on chDB 4.4.0 (ClickHouse 26.9.2.1): every column, index and setting is accepted as written,
nothing had to be dropped. `enable_full_text_index = 1` is a query-level setting (it unlocks the `text`
index type for the CREATE); ClickHouse applies it to the CREATE and does not keep it in the table's
`engine_full`, exactly like on a server. All other settings show up in `system.tables.engine_full`.
"""

from __future__ import annotations

import re

from exports_pipeline.events.columns import COLUMNS

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ENGINE = "ReplacingMergeTree(event_ts, is_deleted)"
PARTITION_BY = "toYYYYMM(start_time)"
PRIMARY_KEY = "(project_id, toStartOfMinute(start_time), xxHash32(trace_id))"
ORDER_BY = "(project_id, toStartOfMinute(start_time), xxHash32(trace_id), span_id, start_time)"
SAMPLE_BY = "xxHash32(trace_id)"

#: (name, expression, type, granularity or None for the type's default). Names as in Langfuse.
INDEXES: tuple[tuple[str, str, str, int | None], ...] = (
    ("idx_span_id", "span_id", "bloom_filter(0.01)", 1),
    ("idx_trace_id", "trace_id", "bloom_filter(0.01)", 1),
    ("idx_user_id", "user_id", "bloom_filter(0.01)", 1),
    ("idx_session_id", "session_id", "bloom_filter(0.01)", 1),
    ("idx_created_at", "created_at", "minmax", 1),
    ("idx_updated_at", "updated_at", "minmax", 1),
    ("idx_fts_input_low", "lower(input)", "text(tokenizer = splitByNonAlpha)", None),
    ("idx_fts_output_low", "lower(output)", "text(tokenizer = splitByNonAlpha)", None),
    ("idx_fts_metadata_values", "metadata_values", "text(tokenizer = splitByNonAlpha)", None),
    ("idx_fts_metadata_names", "metadata_names", "text(tokenizer = splitByNonAlpha)", None),
    # migration 0043 (ALTER TABLE ... ADD INDEX), named as Langfuse names it
    ("idx_ngram_metadata_values", "arrayStringConcat(metadata_values)", "ngrambf_v1(4, 32000, 3, 0)", 2),
)

#: Table SETTINGS of events_full (§1.1), in Langfuse's order. None rejected by chDB 26.9 (see module doc).
SETTINGS: tuple[tuple[str, str], ...] = (
    ("index_granularity_bytes", "'64Mi'"),  # default 10MiB; avoids tiny granules with large rows
    ("merge_max_block_size_bytes", "'64Mi'"),
    ("enable_block_number_column", "1"),
    ("enable_block_offset_column", "1"),
    ("prewarm_mark_cache", "1"),
    ("prewarm_primary_key_cache", "1"),
    ("enable_full_text_index", "1"),  # query-level: needed for the `text` indexes; not kept in engine_full
)

#: Settings/indexes dropped because chDB rejected them: name → error. Empty on chDB 4.4.0 / CH 26.9.2.1.
REJECTED: dict[str, str] = {}


def validate_identifier(name: str, what: str = "identifier") -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"invalid ClickHouse {what} {name!r}: must match {_IDENT.pattern}")
    return name


def split_table_name(table: str, database: str | None = None) -> tuple[str | None, str]:
    """`'db.t'` or (`'t'`, `'db'`) → (`'db'`, `'t'`), validated; database None means the client's current one."""
    if not isinstance(table, str):
        raise ValueError(f"invalid table name {table!r}")
    if "." in table:
        db, _, name = table.partition(".")
        if database is not None and database != db:
            raise ValueError(f"table {table!r} names database {db!r} but database={database!r} was given")
        database = db
    else:
        name = table
    validate_identifier(name, "table name")
    if database is not None:
        validate_identifier(database, "database name")
    return database, name


def qualified_name(table: str, database: str | None = None) -> str:
    """The backtick-quoted `db`.`table` (or `table`) after validation."""
    db, name = split_table_name(table, database)
    return f"`{db}`.`{name}`" if db else f"`{name}`"


def create_table_sql(table: str = "events_full", database: str | None = None) -> str:
    """The CREATE TABLE IF NOT EXISTS statement for events_full under the given name."""
    lines = [c.ddl() for c in COLUMNS]
    for name, expr, typ, gran in INDEXES:
        lines.append(f"INDEX {name} {expr} TYPE {typ}" + (f" GRANULARITY {gran}" if gran is not None else ""))
    body = ",\n    ".join(lines)
    settings = ",\n    ".join(f"{k} = {v}" for k, v in SETTINGS if k not in REJECTED)
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified_name(table, database)}\n(\n    {body}\n)\n"
        f"ENGINE = {ENGINE}\n"
        f"PARTITION BY {PARTITION_BY}\n"
        f"PRIMARY KEY {PRIMARY_KEY}\n"
        f"ORDER BY {ORDER_BY}\n"
        f"SAMPLE BY {SAMPLE_BY}\n"
        f"SETTINGS\n    {settings}"
    )


def create_events_table(client, table: str = "events_full", database: str | None = None) -> str:
    """Create events_full (IF NOT EXISTS) through a clickhouse-connect client; returns the quoted name."""
    sql = create_table_sql(table, database)
    client.command(sql)
    return qualified_name(table, database)
