"""One object-storage window: ClickHouse -> files per format -> manifest -> event_log -> cursor.

Open this after `plugin.py`: the engine hands a partition to the plug-in's `deliver`, which loads
the project's integration and calls `export_window`; the two resources it talks to are
`ClickHouseResource` (the bytes) and an `ObjectStore` (where they land). The manifest is the commit
point: it is written after every data file, and a window without a manifest is not exported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exports_pipeline.crypto import SecretBox
from exports_pipeline.errors import DeploymentFault
from exports_pipeline.events.queries import (
    PARQUET_SETTINGS,
    TEXT_SETTINGS,
    WINDOW_FILTER,
    qualified_table,
    window_export_sql,
    window_probe_sql,
)
from exports_pipeline.events.schema import ExportSchema, read_export_schema
from exports_pipeline.formats import file_extension, get_format
from exports_pipeline.sinks.object_storage.attempts import claim, delete_stale, recorded_here, window_scratch
from exports_pipeline.files import ExportedFile, engine_parquet_files, engine_text_files
from exports_pipeline.sinks.object_storage.keys import DEFAULT_KEY_TEMPLATE, KeyContext, data_key, manifest_key, validate_template
from exports_pipeline.windows import Window, iso, subrange_count
from exports_pipeline.resources.clickhouse import ClickHouseResource, query_tags
from exports_pipeline.resources.object_store.base import ObjectStore
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.state.models import SINK_BLOB, BlobIntegration

# 2: `columns` lists {"name", "type"} of the columns written (was: names of the registry's columns) and
# `missing_columns` names the registry columns the deployed table lacks.
MANIFEST_SCHEMA_VERSION = 2
SINK = SINK_BLOB
# Sub-range target (estimated output bytes per query). Each query streams (the engine writes its file,
# reading in sorting-key order), so the size bounds scratch disk and the unit of retry work, not memory;
# every extra sub-range costs another FINAL pass, so they are large.
DEFAULT_SUBRANGE_BYTES = 1 << 30
ROW_OVERHEAD_BYTES = 700  # rendered size of a row's non-I/O columns, for the size estimate


def entity_type(frequency: str) -> str:
    return f"blob_storage_export_{frequency}"


@dataclass(frozen=True)
class ExportRequest:
    project_id: str
    frequency: str
    window: Window
    partition_key: str
    run_id: str


@dataclass
class ExportResult:
    manifest_uri: str
    manifest: dict
    files: list[ExportedFile] = field(default_factory=list)
    seconds: float = 0.0
    deleted_stale: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.manifest["source"]["row_count"])

    @property
    def bytes(self) -> int:
        return sum(f.obj.size for f in self.files)


def destination_for(integration: BlobIntegration, box: SecretBox | None) -> Destination:
    """The integration's destination, its secret decrypted only here, only in memory."""
    if integration.type == "LOCAL":
        return Destination(scheme="file", bucket=integration.bucket_name, prefix=integration.prefix)
    secret = None
    if integration.secret_access_key:
        if box is None:  # ours, not the customer's: see DeploymentFault (a wrong key raises one in decrypt)
            raise DeploymentFault("ENCRYPTION_KEY is not set, so the destination's stored secret cannot be "
                                  "decrypted: set the key it was stored under (a new key cannot open it)",
                                  setting="ENCRYPTION_KEY")
        secret = box.decrypt(integration.secret_access_key)
    return Destination(
        scheme="s3", bucket=integration.bucket_name, prefix=integration.prefix, endpoint_url=integration.endpoint,
        region="us-east-1" if integration.region in ("", "auto") else integration.region,
        force_path_style=integration.force_path_style, access_key_id=integration.access_key_id,
        secret_access_key=secret, sse=integration.sse, sse_kms_key_id=integration.sse_kms_key_id,
    )


def export_window(
    clickhouse: ClickHouseResource,
    store: ObjectStore,
    integration: BlobIntegration,
    request: ExportRequest,
    *,
    state=None,
    subrange_bytes: int = DEFAULT_SUBRANGE_BYTES,
    log: Callable[[str], None] = lambda _msg: None,
) -> ExportResult:
    """Export one window in every configured format, then write its manifest, then clean up."""
    started = time.monotonic()
    template = validate_template(integration.key_template or DEFAULT_KEY_TEMPLATE)
    ctx = KeyContext(store.destination.prefix, request.project_id, request.frequency, request.window)
    params = {"project_id": request.project_id, "start": request.window.start, "end": request.window.end}
    tags = query_tags(run=request.run_id, partition=request.partition_key, sink=SINK)
    table = clickhouse.events_table
    # The deployed table's columns, read before anything is written (a table unfit to select rows from
    # raises DeploymentFault here).
    schema = read_export_schema(clickhouse, tags=tags)
    if schema.missing:
        log(f"{table} lacks {len(schema.missing)} registry column(s), exported without them: "
            + ", ".join(schema.missing))

    # Size estimate from stored versions (no FINAL: cheap); exact counts per sub-range in one FINAL pass.
    probe = clickhouse.query_dicts(window_probe_sql(table, schema.names), params, tags=tags)[0]
    estimated = int(probe["rows"]) * ROW_OVERHEAD_BYTES + int(probe["io_chars"] or 0)
    max_file = (integration.max_file_size_mb or 0) << 20
    target = min(subrange_bytes, max_file) if max_file else subrange_bytes
    subranges = request.window.split(subrange_count(estimated, target))
    sub_counts, max_event_ts = _subrange_counts(clickhouse, table, request, subranges, tags)
    source_rows = sum(sub_counts)
    if not source_rows:
        subranges, sub_counts = [], []
    log(f"{request.partition_key}: {source_rows} rows, ~{estimated >> 20} MiB, {len(subranges)} sub-range(s)")

    mkey = manifest_key(template, ctx)
    etype = entity_type(request.frequency)

    def claim_keys(*keys: str) -> None:
        claim(state, store, request.project_id, etype, request.partition_key, keys)

    with window_scratch(store, etype, request.partition_key) as scratch:
        # Clear what earlier attempts left, then retract the old manifest before any data file changes:
        # from here until the new manifest lands the window has none, so no manifest ever describes
        # bytes that are not there (a crash mid-re-export leaves an unexported window, not a lying one).
        claim_keys(mkey)
        earlier = recorded_here(state, store, request.project_id, etype, request.partition_key)
        store.discard_incomplete(sorted({e.bucket_path for e in earlier} | {mkey}))
        store.delete_keys([mkey])

        files: list[ExportedFile] = []
        for fmt_name in integration.file_types:
            fmt = get_format(fmt_name)
            fmt_scratch = os.path.join(scratch, fmt_name)
            os.makedirs(fmt_scratch)
            if fmt.text:
                new = _export_text(clickhouse, store, integration, template, ctx, fmt_name, subranges, sub_counts,
                                   params, tags, estimated, max_file, schema, fmt_scratch, claim_keys)
            else:
                new = _export_parquet(clickhouse, store, template, ctx, subranges, sub_counts, params, tags,
                                      estimated, schema, fmt_scratch, claim_keys)
            files.extend(new)
        manifest = _manifest(request, integration, table, source_rows, max_event_ts, files, schema)
        mobj = store.put_bytes(mkey, (json.dumps(manifest, indent=2) + "\n").encode(),
                               "application/json; charset=utf-8")
        stale = delete_stale(state, store, earlier, {f.obj.key for f in files} | {mkey})
    return ExportResult(manifest_uri=mobj.uri, manifest=manifest, files=files,
                        seconds=time.monotonic() - started, deleted_stale=stale)


def _manifest(request: ExportRequest, integration: BlobIntegration, table: str, source_rows: int,
              max_event_ts: dt.datetime | None, files: list[ExportedFile], schema: ExportSchema) -> dict:
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "project_id": request.project_id,
        "frequency": request.frequency,
        "partition_key": request.partition_key,
        "window": {"start": iso(request.window.start), "end": iso(request.window.end), "bounds": "[start, end)",
                   "column": "start_time"},
        "formats": list(integration.file_types),
        "compression": integration.compression,
        "source": {"table": table, "row_count": source_rows,
                   "max_event_ts": iso(max_event_ts) if source_rows else None},
        "columns": schema.manifest_columns(),
        "missing_columns": list(schema.missing),
        "files": [
            {"key": f.obj.key, "uri": f.obj.uri, "format": f.format, "compression": f.compression, "part": f.part,
             "row_count": f.rows, "bytes": f.obj.size, "sha256": f.obj.sha256, "content_type": f.obj.content_type}
            for f in files
        ],
        "run_id": request.run_id,
        "created_at": iso(dt.datetime.now(dt.UTC)),
    }


# ----------------------------------------------------------------------------------------------- formats


def _engine_writer(clickhouse: ClickHouseResource, sql: str, settings: dict, params: dict, tags: dict,
                   subranges: list[Window]):
    """`write(i, path, format, compression)`: ClickHouse writes sub-range i to `path` (the engine itself on
    chDB, streamed over HTTP from a server)."""
    def write(i: int, path: str, ch_format: str, compression: str | None) -> None:
        sub = subranges[i]
        clickhouse.export_to_file(sql, ch_format, path, {**params, "start": sub.start, "end": sub.end},
                                  settings=settings, tags=tags, compression=compression)
    return write


def _export_text(clickhouse, store, integration, template, ctx, fmt_name, subranges, sub_counts, params, tags,
                 estimated, max_file, schema: ExportSchema, scratch: str, claim_keys) -> list[ExportedFile]:
    """The window's sub-ranges in one text format, rolling over to a new file at max_file_size_mb."""
    ext = file_extension(get_format(fmt_name), integration.compression)
    sql = window_export_sql(clickhouse.events_table, fmt_name, schema.columns)
    return engine_text_files(
        store=store, fmt_name=fmt_name, compression=integration.compression, embedded=clickhouse.is_embedded,
        counts=sub_counts, columns=schema.names,
        write=_engine_writer(clickhouse, sql, TEXT_SETTINGS, params, tags, subranges),
        key=lambda n: data_key(template, ctx, fmt_name, ext, n), expected=estimated, max_file=max_file,
        scratch_dir=scratch, claim=claim_keys)


def _export_parquet(clickhouse, store, template, ctx, subranges, sub_counts, params, tags,
                    estimated: int, schema: ExportSchema, scratch: str, claim_keys) -> list[ExportedFile]:
    """One Parquet file per non-empty sub-range."""
    nonempty = [sub for sub, count in zip(subranges, sub_counts, strict=True) if count]
    sql = window_export_sql(clickhouse.events_table, "parquet", schema.columns)
    return engine_parquet_files(
        store=store, count=len(nonempty),
        write=_engine_writer(clickhouse, sql, PARQUET_SETTINGS, params, tags, nonempty),
        key=lambda n: data_key(template, ctx, "parquet", get_format("parquet").extension, n),
        expected=estimated * len(nonempty) // max(len(subranges), 1), scratch_dir=scratch, claim=claim_keys)


def _subrange_counts(clickhouse, table, request, subranges, tags) -> tuple[list[int], dt.datetime | None]:
    """Rows per sub-range (latest versions, FINAL) and the window's max(event_ts), in one pass: the
    manifest's source row count and the CSV files' row counts (JSON formats count their own lines)."""
    if len(subranges) > 1:
        bounds = ", ".join(f"start_time < {{b{i}:DateTime64(6, 'UTC')}}, {i}" for i in range(len(subranges) - 1))
        sub = f"multiIf({bounds}, {len(subranges) - 1})"
    else:
        sub = "0"
    sql = (f"SELECT {sub} AS sub, count() AS rows, max(event_ts) AS max_event_ts "
           f"FROM {qualified_table(table)} FINAL WHERE {WINDOW_FILTER} GROUP BY sub")
    params = {"project_id": request.project_id, "start": request.window.start, "end": request.window.end}
    params.update({f"b{i}": s.end for i, s in enumerate(subranges[:-1])})
    found = {int(r[0]): (int(r[1]), r[2]) for r in clickhouse.query(sql, params, tags=tags)}
    latest = max((ts for _, ts in found.values()), default=None)
    return [found.get(i, (0, None))[0] for i in range(len(subranges))], latest
