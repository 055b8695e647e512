"""SQL over the events table. Every value is a server-side parameter; identifiers are validated.

Reads use `FINAL`, so each span appears once in its latest version and deleted rows are gone even
while ReplacingMergeTree versions are unmerged (a test compares this with an explicit argMax dedup).
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def qualified_table(name: str) -> str:
    """`db.table` or `table`, each part validated and back-quoted."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"invalid table name {name!r}")
    return ".".join(f"`{p}`" for p in parts)


def source_profile_sql(table: str) -> str:
    """Per project and UTC day: rows, distinct traces, bytes, first and last start_time (latest versions)."""
    return f"""
        SELECT project_id, toDate(start_time) AS day, count() AS rows, uniqExact(trace_id) AS traces,
               sum(byteSize(*)) AS bytes, min(start_time) AS min_start_time, max(start_time) AS max_start_time
        FROM {qualified_table(table)} FINAL
        WHERE is_deleted = 0
        GROUP BY project_id, day
        ORDER BY project_id, day
    """
