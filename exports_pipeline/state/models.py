"""What the state store hands out and takes in: frozen, validated values, never rows.

Validation lives in `__post_init__` so that a bad integration cannot even be constructed, whether it
comes from the CLI, a test or a row; every error names the field. Encrypted fields are checked for the
`iv:cipher:tag` layout, which refuses plaintext secrets at the door, and are kept out of `repr`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exports_pipeline.crypto import is_encrypted_format
from exports_pipeline.formats import COMPRESSIONS, FORMATS
from exports_pipeline.windows import FREQUENCIES

ERROR_MAX_CHARS = 1000

BLOB_TYPES = ("S3", "S3_COMPATIBLE", "LOCAL")
EXPORT_MODES = ("FULL_HISTORY", "FROM_TODAY", "FROM_CUSTOM_DATE")
EXPORT_SOURCES = ("EVENTS", "TRACES_OBSERVATIONS", "TRACES_OBSERVATIONS_EVENTS")
FIELD_GROUPS = ("core", "basic", "time", "io", "metadata", "model", "usage", "prompt", "metrics", "tools",
                "trace_context")
FILE_TYPES = tuple(FORMATS)  # one home for formats, compressions and frequencies: formats.py, windows.py
SSE_MODES = ("AES256", "aws:kms")
MIXPANEL_REGIONS = ("api", "api-eu", "api-in")
BATCH_STATUSES = ("QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED")
BATCH_FINAL_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")
BATCH_FORMATS = ("CSV", "JSON", "JSONL", "PARQUET")
# event_log.entity_type of a batch export's file (entity_id: the export id)
BATCH_EXPORT_ENTITY = "batch_export"

# Cursor sink families. A sink is either the family name or "family:<qualifier>" (the object-storage
# exporter keeps one cursor per frequency); changing an integration's mode, or deleting it, forgets every
# cursor of its family for that project.
SINK_BLOB = "object_storage"
SINK_POSTHOG = "posthog"
SINK_MIXPANEL = "mixpanel"


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_text(name: str, error: str, *, empty: str = "(no message)") -> str:
    """An error message fit for storage: at most 1000 chars (Langfuse's limit), never empty.

    Lenient on purpose: this runs inside exception handlers, where refusing `str(exc) == ""` would
    replace the real failure with our own.
    """
    if not isinstance(error, str):
        raise ValueError(f"{name} must be a string, got {type(error).__name__}")
    return (error or empty)[:ERROR_MAX_CHARS]


def check_aware(name: str, value: datetime | None, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive datetime")


def check_choice(name: str, value: Any, choices: Iterable[Any], *, optional: bool = False) -> None:
    if optional and value is None:
        return
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_text(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def check_encrypted(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not is_encrypted_format(value):
        # Never echo the value: it may be a plaintext secret passed by mistake.
        raise ValueError(f"{name} must be encrypted with crypto.SecretBox (iv:cipher:tag hex)")


def check_url(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) < 9:
        raise ValueError(f"{name} must be an http(s) URL, got {value!r}")


def blob_cursor_sink(frequency: str) -> str:
    """The cursor of one export frequency of a project's object-storage integration."""
    check_choice("frequency", frequency, FREQUENCIES)
    return f"{SINK_BLOB}:{frequency}"


def _freeze(fields: dict[str, datetime | None], obj: object) -> None:
    for name, value in fields.items():
        check_aware(name, value)
        if value is not None:
            object.__setattr__(obj, name, value.astimezone(UTC))


@dataclass(frozen=True)
class BlobIntegration:
    """One project's object-storage export; LOCAL means `bucket_name` is an absolute directory.

    `compressed` (Langfuse's column) is derived from `compression` when stored, so a Langfuse-shaped
    reader sees the truth. State fields (sync times, errors, created/updated) are owned by the store:
    `upsert_blob_integration` ignores them on input.
    """

    project_id: str
    type: str
    bucket_name: str
    export_frequency: str
    file_types: tuple[str, ...] = ("parquet",)
    prefix: str = ""
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = "auto"
    endpoint: str | None = None
    force_path_style: bool = False
    enabled: bool = True
    export_mode: str = "FULL_HISTORY"
    export_start_date: datetime | None = None
    export_source: str = "EVENTS"
    export_field_groups: tuple[str, ...] | None = None
    export_tuning: dict[str, Any] | None = None
    compression: str = "none"
    sse: str | None = None
    sse_kms_key_id: str | None = None
    max_file_size_mb: int | None = None
    key_template: str | None = None
    next_sync_at: datetime | None = None
    last_sync_at: datetime | None = None
    run_started_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_failure_notification_sent_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        check_text("project_id", self.project_id)
        check_choice("type", self.type, BLOB_TYPES)
        check_text("bucket_name", self.bucket_name)
        if self.type == "LOCAL" and not self.bucket_name.startswith("/"):
            raise ValueError("bucket_name must be an absolute directory for type LOCAL")
        check_choice("export_frequency", self.export_frequency, FREQUENCIES)
        if isinstance(self.file_types, str) or not isinstance(self.file_types, Iterable):
            raise ValueError("file_types must be a non-empty list of " + str(list(FILE_TYPES)))
        file_types = tuple(self.file_types)
        if not file_types:
            raise ValueError("file_types must be a non-empty list of " + str(list(FILE_TYPES)))
        for ft in file_types:
            check_choice("file_types", ft, FILE_TYPES)
        if len(set(file_types)) != len(file_types):
            raise ValueError(f"file_types must not repeat a type, got {list(file_types)}")
        object.__setattr__(self, "file_types", file_types)
        if not isinstance(self.prefix, str) or (self.prefix and not self.prefix.endswith("/")):
            raise ValueError("prefix must be empty or end with '/'")
        check_text("access_key_id", self.access_key_id, optional=True)
        check_encrypted("secret_access_key", self.secret_access_key, optional=True)
        check_text("region", self.region)
        check_url("endpoint", self.endpoint, optional=True)
        check_choice("export_mode", self.export_mode, EXPORT_MODES)
        check_aware("export_start_date", self.export_start_date)
        if self.export_mode == "FROM_CUSTOM_DATE" and self.export_start_date is None:
            raise ValueError("export_start_date is required when export_mode is FROM_CUSTOM_DATE")
        if self.export_mode == "FULL_HISTORY" and self.export_start_date is not None:
            raise ValueError("export_start_date must be empty when export_mode is FULL_HISTORY")
        check_choice("export_source", self.export_source, EXPORT_SOURCES)
        if self.export_field_groups is not None:
            groups = tuple(self.export_field_groups)
            if not groups:
                raise ValueError("export_field_groups must be null (all groups) or a non-empty list")
            for group in groups:
                check_choice("export_field_groups", group, FIELD_GROUPS)
            object.__setattr__(self, "export_field_groups", groups)
        if self.export_tuning is not None and not isinstance(self.export_tuning, dict):
            raise ValueError("export_tuning must be a JSON object or null")
        check_choice("compression", self.compression, COMPRESSIONS)
        check_choice("sse", self.sse, SSE_MODES, optional=True)
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id is only valid with sse 'aws:kms'")
        check_text("sse_kms_key_id", self.sse_kms_key_id, optional=True)
        if self.max_file_size_mb is not None and (
            isinstance(self.max_file_size_mb, bool)
            or not isinstance(self.max_file_size_mb, int)
            or self.max_file_size_mb <= 0
        ):
            raise ValueError("max_file_size_mb must be a positive integer or null")
        check_text("key_template", self.key_template, optional=True)
        for name in ("force_path_style", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool")
        _freeze({n: getattr(self, n) for n in ("export_start_date", "next_sync_at", "last_sync_at",
                 "run_started_at", "last_error_at", "last_failure_notification_sent_at", "created_at",
                 "updated_at")}, self)

    @property
    def compressed(self) -> bool:
        return self.compression != "none"


@dataclass(frozen=True)
class PostHogIntegration:
    project_id: str
    encrypted_posthog_api_key: str = field(repr=False)
    posthog_host_name: str
    enabled: bool = True
    export_source: str = "EVENTS"
    project_name: str | None = None  # sent as `langfuse_project_name`
    last_sync_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        check_text("project_id", self.project_id)
        check_encrypted("encrypted_posthog_api_key", self.encrypted_posthog_api_key)
        check_url("posthog_host_name", self.posthog_host_name)
        check_text("project_name", self.project_name, optional=True)
        check_choice("export_source", self.export_source, EXPORT_SOURCES)
        if not isinstance(self.enabled, bool):
            raise ValueError("enabled must be a bool")
        _freeze({n: getattr(self, n) for n in ("last_sync_at", "last_error_at", "created_at", "updated_at")},
                self)


@dataclass(frozen=True)
class MixpanelIntegration:
    """One project's Mixpanel sync. Credentials: a project token, or a service account (username, secret,
    numeric Mixpanel project id), never both; the secrets are stored encrypted. `endpoint` replaces the
    regional base URL `https://{mixpanel_region}.mixpanel.com` (a proxy, a test receiver)."""

    project_id: str
    encrypted_mixpanel_project_token: str | None = field(default=None, repr=False)
    mixpanel_region: str = "api"
    enabled: bool = True
    export_source: str = "EVENTS"
    mixpanel_service_account_username: str | None = None
    encrypted_mixpanel_service_account_secret: str | None = field(default=None, repr=False)
    mixpanel_project_id: str | None = None
    endpoint: str | None = None
    last_sync_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        check_text("project_id", self.project_id)
        check_encrypted("encrypted_mixpanel_project_token", self.encrypted_mixpanel_project_token, optional=True)
        check_text("mixpanel_service_account_username", self.mixpanel_service_account_username, optional=True)
        check_encrypted("encrypted_mixpanel_service_account_secret", self.encrypted_mixpanel_service_account_secret,
                        optional=True)
        if self.mixpanel_project_id is not None and not (
                isinstance(self.mixpanel_project_id, str) and self.mixpanel_project_id.isascii()
                and self.mixpanel_project_id.isdigit()):
            raise ValueError(f"mixpanel_project_id must be Mixpanel's numeric project id, got {self.mixpanel_project_id!r}")
        account = (self.mixpanel_service_account_username, self.encrypted_mixpanel_service_account_secret,
                   self.mixpanel_project_id)
        if self.encrypted_mixpanel_project_token is not None:
            if any(v is not None for v in account):
                raise ValueError("credentials: a project token or a service account, not both")
        elif any(v is None for v in account):
            raise ValueError("credentials: a project token, or a service account with username, secret and "
                             "mixpanel_project_id, is required")
        check_choice("mixpanel_region", self.mixpanel_region, MIXPANEL_REGIONS)
        check_url("endpoint", self.endpoint, optional=True)
        check_choice("export_source", self.export_source, EXPORT_SOURCES)
        if not isinstance(self.enabled, bool):
            raise ValueError("enabled must be a bool")
        _freeze({n: getattr(self, n) for n in ("last_sync_at", "last_error_at", "created_at", "updated_at")},
                self)

    @property
    def uses_service_account(self) -> bool:
        return self.encrypted_mixpanel_project_token is None


@dataclass(frozen=True)
class EventLogEntry:
    """One exported object. `id` is assigned on first insert and kept across re-runs of the same key."""

    bucket_name: str
    bucket_path: str
    project_id: str
    entity_type: str
    entity_id: str
    event_id: str
    trace_id: str | None = None
    id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Where: the S3 endpoint ('' for AWS's own and for local directories), its region, and the prefix of
    # the destination that wrote it (stale cleanup stays inside one destination).
    endpoint: str = ""
    region: str | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        for name in ("bucket_name", "bucket_path", "project_id", "entity_type", "entity_id", "event_id"):
            check_text(name, getattr(self, name))
        check_text("trace_id", self.trace_id, optional=True)
        check_text("region", self.region, optional=True)
        if not isinstance(self.endpoint, str) or not isinstance(self.prefix, str):
            raise ValueError("endpoint and prefix must be strings ('' when not applicable)")
        _freeze({"created_at": self.created_at, "updated_at": self.updated_at}, self)

    @property
    def place(self) -> tuple[str, str, str]:
        """The object's identity: the same bucket and key on two servers are two objects."""
        return (self.endpoint, self.bucket_name, self.bucket_path)

    @property
    def owner(self) -> tuple[str, str, str]:
        return (self.project_id, self.entity_type, self.entity_id)


@dataclass(frozen=True)
class Cursor:
    """Everything strictly before `last_sync_at` has been delivered to `sink` for `project_id`."""

    sink: str
    project_id: str
    last_sync_at: datetime | None
    last_run_id: str | None
    last_error: str | None
    last_error_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class BatchExport:
    id: str
    project_id: str
    user_id: str
    name: str
    status: str
    query: dict[str, Any]
    format: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    url: str | None = field(default=None, repr=False)  # presigned: a bearer credential until it expires
    log: str | None = None  # why it FAILED, for the person who asked (Langfuse's column)
    compression: str = "none"
    email: str | None = None
    rows_matched: int | None = None
    rows_written: int | None = None
    truncated: bool = False
    bytes: int | None = None
    object_uri: str | None = None
    object_key: str | None = None
    message: str | None = None  # what else they should know: the truncation in words, a mail not sent
    run_id: str | None = None
    started_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    file_deleted_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in BATCH_FINAL_STATUSES
