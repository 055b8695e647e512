"""A batch export request as a person types it (CLI flags, the launchpad form), validated into a row.

Everything is checked before anything is stored: the filter, search, columns and order (`query.py`),
the format and compression, the limit against `EXPORTS_BATCH_EXPORT_ROW_LIMIT`, the project id and the
e-mail address. Errors are `ConfigError`s whose message starts with the flag it is about. The stored
`query` is `BatchQuery.to_json()`, cutoff included, so a re-run reads exactly the same rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from exports_pipeline.batch_export.query import BatchQuery
from exports_pipeline.errors import ConfigError
from exports_pipeline.formats import COMPRESSIONS, FORMATS, get_format
from exports_pipeline.state.models import BatchExport, utcnow

FLAGS = {"project": "--project", "format": "--format", "compression": "--compression", "filter": "--filter",
         "search": "--search", "search_type": "--search-type", "columns": "--columns", "order_by": "--order-by",
         "limit": "--limit", "name": "--name", "user_id": "--user-id", "email": "--email", "query": "query"}


@dataclass(frozen=True)
class BatchRequest:
    """The fields of `exports-pipeline batch-export create` (and of the job's launchpad config)."""

    project_id: str
    format: str
    compression: str = "none"
    filter: str | list | None = None
    search: str | None = None
    search_types: list[str] | None = None
    order_by: str | None = None
    columns: str | list[str] | None = None
    limit: int | None = None
    name: str | None = None
    user_id: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class ValidRequest:
    """What `submit` stores: the query (cutoff = created_at) and the row's own columns."""

    query: BatchQuery
    format: str  # the row's spelling: CSV, JSON, JSONL, PARQUET
    compression: str
    name: str
    user_id: str
    email: str | None


def _flag_error(exc: ConfigError) -> ConfigError:
    flag = FLAGS.get(exc.field or "", exc.field or "")
    text = str(exc)
    return ConfigError(text if text.startswith(flag) else f"{flag}: {text}", field=exc.field)


def validate(request: BatchRequest, row_limit: int, now: dt.datetime | None = None) -> ValidRequest:
    """The request checked whole; the first problem raises, naming its flag."""
    from exports_pipeline.engine.partitions import check_project_id
    from exports_pipeline.resources.mailer import validate_email_address

    now = now or utcnow()
    try:
        try:
            check_project_id(request.project_id or "")
        except ValueError as exc:
            raise ConfigError(str(exc), field="project") from None
        fmt = (request.format or "").lower()
        if fmt not in FORMATS:
            raise ConfigError(f"{request.format!r} is not one of {', '.join(FORMATS)}", field="format")
        compression = (request.compression or "none").lower()
        if compression not in COMPRESSIONS:
            raise ConfigError(f"{request.compression!r} is not one of {', '.join(COMPRESSIONS)}", field="compression")
        if compression != "none" and not get_format(fmt).text:
            raise ConfigError("Parquet compresses its own pages (zstd); file compression applies to csv, json "
                              "and jsonl", field="compression")
        limit = request.limit
        if limit is None or limit == 0:
            limit = row_limit
        elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"{limit!r} must be a positive whole number of rows", field="limit")
        elif limit > row_limit:
            raise ConfigError(f"{limit:,} is above this deployment's row limit of {row_limit:,} "
                              "(EXPORTS_BATCH_EXPORT_ROW_LIMIT); --limit can only lower it", field="limit")
        query = BatchQuery.build(request.project_id, now, filter=request.filter, search=request.search,
                                 search_types=request.search_types, columns=request.columns,
                                 order_by=request.order_by, limit=limit)
        email = None
        if request.email:
            email = validate_email_address(request.email, field="--email")
    except ConfigError as exc:
        raise _flag_error(exc) from None
    name = (request.name or "").strip() or f"{now.isoformat(timespec='seconds').replace('+00:00', 'Z')} - events as {fmt.upper()}"
    user_id = (request.user_id or "").strip() or "exports-pipeline"
    return ValidRequest(query, fmt.upper(), compression, name, user_id, email)


def submit(state, request: BatchRequest, row_limit: int, *, claimed_by_run: str | None = None) -> BatchExport:
    """Validate, then store one row (QUEUED, or owned by `claimed_by_run`); nothing is stored on error."""
    now = utcnow()
    valid = validate(request, row_limit, now)
    return state.create_batch_export(
        valid.query.project_id, valid.user_id, valid.name, valid.query.to_json(), valid.format,
        compression=valid.compression, email=valid.email, claimed_by_run=claimed_by_run, created_at=now)


def stored_query(export: BatchExport) -> BatchQuery:
    """The row's query, validated again (a stored filter trusts nothing), with the row's own project."""
    query = BatchQuery.from_json(export.query)
    if query.project_id != export.project_id:
        raise ConfigError(f"batch export {export.id}: its query names project {query.project_id!r}, the row "
                          f"{export.project_id!r}; refusing to export either", field="query")
    return query
