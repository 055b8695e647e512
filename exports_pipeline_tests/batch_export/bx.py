"""Shared pieces of the batch export tests: an environment (state DB, destination, settings, resources)
over the module's seeded events, a submitter, and a reader that turns any exported file and ClickHouse's
native result into one canonical shape (the reference comes from the native protocol, not from a text
format, so a rendering bug cannot hide by being on both sides)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv

from exports_pipeline.batch_export.query import _EXPRESSION, BatchQuery, export_sql
from exports_pipeline.batch_export.request import BatchRequest, submit
from exports_pipeline.events.columns import is_array, is_datetime, is_decimal, is_integer, is_map
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.settings import BatchExportSettings
from exports_pipeline.state.store import StateStore
from exports_pipeline_tests.export.readback import decompress, read_json, read_jsonl, read_parquet

FAST_STORE = dict(min_part_size_mb=5, default_part_size_mb=5, backoff_base_seconds=0.01, backoff_max_seconds=0.05)


@dataclasses.dataclass
class Env:
    clickhouse: object
    state: StateStore
    settings: BatchExportSettings
    object_store: ObjectStoreResource
    root: object  # the local destination directory (file destinations)
    bucket: str | None = None  # the S3 bucket (S3 destinations)
    proxy: object = None  # the fault proxy in front of it

    def submit(self, **fields) -> str:
        fields.setdefault("project_id", "proj-1")
        fields.setdefault("format", "csv")
        return submit(self.state, BatchRequest(**fields), self.settings.row_limit).id

    def run(self, export_id: str, run_id: str = "run-1", **kw):
        from exports_pipeline.batch_export.runner import run_batch_export

        return run_batch_export(export_id, clickhouse=self.clickhouse, object_store=self.object_store,
                                state=self.state, settings=self.settings, run_id=run_id, **kw)

    def with_settings(self, **changes) -> Env:
        return dataclasses.replace(self, settings=self.settings.model_copy(update=changes))

    def resources(self, mailer=None) -> dict:
        from exports_pipeline.resources.mailer import MailerResource

        return {"clickhouse": self.clickhouse, "state": self.state, "object_store": self.object_store,
                "mailer": mailer or MailerResource()}

    def job(self, mailer=None, **kw):
        import dagster as dg

        from exports_pipeline.batch_export.defs import build_batch_export_defs

        defs = dg.Definitions.merge(build_batch_export_defs(self.settings, retry_seconds=0, **kw),
                                    dg.Definitions(resources=self.resources(mailer)))
        return defs.resolve_job_def("batch_export")

    def run_job(self, export_id: str, mailer=None, **kw):
        """The export through the `batch_export` job (in process, a throwaway instance)."""
        import dagster as dg

        with dg.instance_for_test() as instance:
            return self.job(mailer, **kw).execute_in_process(
                run_config={"ops": {"export_request": {"config": {"export_id": export_id}}}}, instance=instance,
                raise_on_error=False)


@contextlib.contextmanager
def local_env(clickhouse, tmp_path, **settings):
    root = tmp_path / "batch-exports"
    state = StateStore(database_url=f"sqlite:///{tmp_path / 'state.db'}")
    settings.setdefault("destination", root.as_uri() + "/")
    bes = BatchExportSettings(**settings)
    try:
        yield Env(clickhouse, state, bes, ObjectStoreResource(**FAST_STORE), root)
    finally:
        state.dispose()


def s3_settings(bucket: str, endpoint: str, **extra) -> dict:
    from pydantic import SecretStr

    return dict(destination=f"s3://{bucket}/exports/", endpoint=endpoint, access_key_id="testing",
                secret_access_key=SecretStr("testing"), force_path_style=True, **extra)


# ------------------------------------------------------------------------------------------ reading back

TYPES = {name: ch_type for name, (_sql, ch_type) in _EXPRESSION.items()}


def _ts(value) -> str | None:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dec(value) -> Decimal:
    return Decimal(str(value)).normalize()


def canonical(name: str, value):
    ch_type = TYPES[name]
    if value is None:
        return None
    if is_datetime(ch_type):
        return _ts(value)
    if is_map(ch_type):
        if isinstance(value, list):  # Parquet maps come back as (key, value) pairs
            value = dict(value)
        return {k: (_dec(v) if "Decimal" in ch_type else v) for k, v in sorted(value.items())}
    if is_array(ch_type):
        return list(value)
    if is_decimal(ch_type):
        return _dec(value)
    if is_integer(ch_type):
        return int(value)
    return value


def read_csv(data: bytes, columns: list[str]) -> list[dict]:
    """RFC 4180 via Arrow: an unquoted empty field is NULL, a quoted one the empty string."""
    header = [name.strip('"') for name in data.split(b"\r\n", 1)[0].decode().split(",")]
    assert header == columns, "the CSV header names every column, in order"
    # one block for the whole file: a quoted value with newlines may not straddle Arrow's blocks
    table = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(block_size=max(1 << 20, len(data))),
                           parse_options=pacsv.ParseOptions(newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(
                               column_types={n: pa.string() for n in header}, strings_can_be_null=True,
                               quoted_strings_can_be_null=False, null_values=[""]))
    rows = []
    for row in table.to_pylist():
        rows.append({k: (json.loads(v, parse_float=Decimal) if v is not None and (is_map(TYPES[k]) or is_array(TYPES[k]))
                         else v) for k, v in row.items()})
    return rows


def read_export(data: bytes, fmt: str, compression: str, columns: list[str]) -> list[dict]:
    raw = decompress(data, compression)
    rows = {"csv": lambda: read_csv(raw, columns), "json": lambda: read_json(raw),
            "jsonl": lambda: read_jsonl(raw), "parquet": lambda: read_parquet(raw)}[fmt]()
    for row in rows:
        assert list(row) == columns, "every row has the chosen columns, in order"
    return [{k: canonical(k, v) for k, v in row.items()} for row in rows]


def reference_rows(clickhouse, query: BatchQuery) -> list[dict]:
    """The same rows through ClickHouse's native protocol (typed values), for comparison."""
    sql, params = export_sql(clickhouse.events_table, query, "parquet")
    return [{k: canonical(k, v) for k, v in row.items()} for row in clickhouse.query_dicts(sql, params)]
