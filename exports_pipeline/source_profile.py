"""The source profile: what the events table holds, per project and day.

It is the first thing to look at when an export's numbers surprise you, and the demo's proof that the
code location reaches ClickHouse end to end.
"""


import dagster as dg
from dagster import AssetExecutionContext

from exports_pipeline.events.queries import source_profile_sql
from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags

PROFILE_COLUMNS = (
    ("project_id", "string"), ("day", "string"), ("rows", "int"), ("traces", "int"), ("bytes", "int"),
    ("min_start_time", "string"), ("max_start_time", "string"),
)


def profile_rows(clickhouse: ClickHouseResource, run_id: str | None = None) -> list[dict]:
    rows = clickhouse.query_dicts(
        source_profile_sql(clickhouse.events_table), tags=query_tags(asset="events_source_profile", run=run_id)
    )
    return [
        {
            "project_id": r["project_id"], "day": r["day"].isoformat(), "rows": int(r["rows"]),
            "traces": int(r["traces"]), "bytes": int(r["bytes"]),
            "min_start_time": r["min_start_time"].isoformat(), "max_start_time": r["max_start_time"].isoformat(),
        }
        for r in rows
    ]


@dg.asset(
    group_name="source",
    kinds={"clickhouse"},
    description="Rows, distinct traces, bytes and start_time range of the events table per project and UTC day "
    "(latest versions, deleted rows excluded).",
)
def events_source_profile(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> dg.MaterializeResult:
    rows = profile_rows(clickhouse, context.run_id)
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in PROFILE_COLUMNS])
    return dg.MaterializeResult(
        metadata={
            "profile": dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows], schema=schema),
            "dagster/row_count": sum(r["rows"] for r in rows),
            "projects": len({r["project_id"] for r in rows}),
            "days": len(rows),
        }
    )


source_profile_job = dg.define_asset_job("source_profile_job", selection=[events_source_profile])
