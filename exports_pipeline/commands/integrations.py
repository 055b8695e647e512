"""`exports-pipeline integrations ...`: add, list, update, disable, enable, remove and validate a project's
integrations (object storage here; PostHog in `integrations_posthog`).

A project may have one integration of each kind. `KINDS` is the registry of kinds: each `Kind` names its
`--kind` value, how to find a project's row, the `update` flags it owns and its handlers, which take
`(args, settings, state, existing)`. `list`, `update`, `disable`, `enable`, `remove` and `validate` resolve
the kind once for every command (`resolve`): `--kind` when given, else the project's only integration, and
a clear refusal naming `--kind` when it has several. A new kind (Mixpanel) is one module with an
`add-<kind>` parser, its handlers and one `register_kind(Kind(...))` call at the end of this module.

Secrets never travel on the command line (shell history, `ps`): the secret access key comes from the
environment variable `EXPORTS_SECRET_ACCESS_KEY` or from one line of stdin (`--secret-access-key-stdin`),
is encrypted with `ENCRYPTION_KEY` before it is stored, and is never printed (lists show `****`).

Every input is checked before anything is written: the destination through `Destination` (the same
validation the export uses), the project id as a Dagster partition key, the key template through
`validate_template`; a bad value exits 2 with one line naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
from pathlib import PurePosixPath
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exports_pipeline.commands import open_state, optional_box, require_project
from exports_pipeline.formats import COMPRESSIONS
from exports_pipeline.formats import FORMATS as FORMATS_BY_NAME
from exports_pipeline.windows import FREQUENCIES

if TYPE_CHECKING:
    from exports_pipeline.settings import Settings
    from exports_pipeline.state.models import BlobIntegration

SECRET_ENV = "EXPORTS_SECRET_ACCESS_KEY"
SECRET_SOURCES = f"{SECRET_ENV} / --secret-access-key-stdin"
FORMATS = tuple(FORMATS_BY_NAME)
MODES = {"full_history": "FULL_HISTORY", "from_today": "FROM_TODAY", "from_custom_date": "FROM_CUSTOM_DATE"}
SSE_CHOICES = {"AES256": "AES256", "aws:kms": "aws:kms", "none": None}
MASKED = "****"
# A stand-in for a stored (encrypted) secret while validating a destination: the real one is not needed
# to check the configuration, so an update that keeps the secret does not need ENCRYPTION_KEY.
_STORED_SECRET_PLACEHOLDER = "stored-secret"
# Destination field -> the flag or variable an operator sets it with.
_FIELD_FLAGS = {
    "url": "--destination", "scheme": "--destination", "bucket": "--destination", "prefix": "--destination",
    "endpoint_url": "--endpoint", "region": "--region", "force_path_style": "--force-path-style",
    "access_key_id": "--access-key-id", "secret_access_key": SECRET_SOURCES, "sse": "--sse",
    "sse_kms_key_id": "--sse-kms-key-id", "key_template": "--key-template",
}
_CLEARS = "(update: an empty value clears it)"


# ------------------------------------------------------------------------------------------------ parser


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("integrations", help="manage a project's integrations (object storage, PostHog)",
                       description=__doc__.splitlines()[0])
    isub = p.add_subparsers(dest="integrations_command", required=True)

    add = isub.add_parser(
        "add-blob", help="add a project's object-storage integration (S3, S3-compatible or a local directory)",
        epilog=f"The secret access key is read from ${SECRET_ENV} or, with --secret-access-key-stdin, from one "
        "line of stdin; it is stored encrypted with ENCRYPTION_KEY. A file:// directory is created if missing.")
    _blob_options(add, for_update=False)
    add.set_defaults(func=cmd_add_blob)
    for kind in KINDS.values():
        if kind.register_add is not None:
            kind.register_add(isub)

    ls = isub.add_parser("list", help="list integrations (secrets masked)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_list)

    up = isub.add_parser(
        "update", help="change only the given settings of a project's integration",
        epilog="Changing --mode or --start-date resets the sync cursor: history is re-planned from the new start. "
        f"The stored secret is replaced only when ${SECRET_ENV} or --secret-access-key-stdin is given.")
    _blob_options(up, for_update=True)
    for kind in KINDS.values():
        if kind.add_update_options is not None:
            kind.add_update_options(up, for_update=True)
    _kind_option(up)
    up.set_defaults(func=cmd_update)

    for name, func, text in (
        ("disable", cmd_disable, "stop exporting a project (settings and cursor are kept)"),
        ("enable", cmd_enable, "resume exporting a project and clear its last error"),
        ("remove", cmd_remove, "delete a project's integration row (exported objects are kept)"),
        ("validate", cmd_validate, "write, read back and delete a probe object at the project's destination"),
    ):
        q = isub.add_parser(name, help=text)
        q.add_argument("--project", required=True, metavar="P")
        _kind_option(q)
        q.set_defaults(func=func)


def _kind_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=sorted(KINDS), metavar="|".join(sorted(KINDS)),
                   help="which of the project's integrations (needed only when it has several)")


def _blob_options(p: argparse.ArgumentParser, *, for_update: bool) -> None:
    required = not for_update
    p.add_argument("--project", required=True, metavar="P", help="the Langfuse project id")
    p.add_argument("--destination", required=required, metavar="URL",
                   help="s3://bucket/prefix/ or file:///absolute/dir/")
    p.add_argument("--frequency", required=required, metavar="|".join(FREQUENCIES))
    p.add_argument("--format", dest="formats", action="append", required=required, metavar="FORMAT",
                   help=f"one of {', '.join(FORMATS)}; repeat for several formats per window"
                   + (" (replaces the whole list)" if for_update else ""))
    p.add_argument("--compression", metavar="|".join(COMPRESSIONS), help="default: none")
    p.add_argument("--mode", required=required, metavar="|".join(MODES))
    p.add_argument("--start-date", metavar="YYYY-MM-DD", help="first UTC day, with --mode from_custom_date")
    p.add_argument("--endpoint", metavar="URL", help="S3-compatible endpoint (makes the type S3_COMPATIBLE)"
                   + (f" {_CLEARS}" if for_update else ""))
    p.add_argument("--region", metavar="R", help="S3 region (default: auto = us-east-1)")
    p.add_argument("--force-path-style", action=argparse.BooleanOptionalAction, default=None,
                   help="path-style S3 addressing (MinIO and most S3-compatible services)")
    p.add_argument("--access-key-id", metavar="ID", help=f"S3 access key id; its secret comes from ${SECRET_ENV} "
                   "or --secret-access-key-stdin" + (f" {_CLEARS}" if for_update else ""))
    p.add_argument("--secret-access-key-stdin", action="store_true",
                   help="read the secret access key from the first line of stdin")
    p.add_argument("--sse", metavar="AES256|aws:kms" + ("|none" if for_update else ""),
                   help="server-side encryption")
    p.add_argument("--sse-kms-key-id", metavar="K", help="KMS key id, with --sse aws:kms")
    p.add_argument("--max-file-size-mb", metavar="N", help="split a window's file above N MiB (0: no limit)")
    p.add_argument("--key-template", metavar="T", help="object key template (default: the built-in one)"
                   + (f" {_CLEARS}" if for_update else ""))


# ------------------------------------------------------------------------------------------------ handlers


def cmd_add_blob(args: argparse.Namespace, settings: Settings) -> int:
    project = require_project(args.project, strict=True)
    state = open_state(settings)
    if state.get_blob_integration(project) is not None:
        raise ValueError(f"--project: project {project!r} already has an object-storage integration; change it "
                         f"with `exports-pipeline integrations update --project {project} ...`")
    secret = _read_secret(args)
    integration, directory = _build(args, None, secret, settings)
    created = _ensure_directory(directory)
    saved = state.upsert_blob_integration(integration)
    if created:
        print(f"created directory {directory}")
    print(f"added object-storage integration for project {project}")
    _print_summary(saved)
    print(_register(_object_storage(), saved.export_frequency, project))
    return 0


def _object_storage():
    """The plug-in, imported late: most commands never need Dagster's import cost."""
    from exports_pipeline.sinks.object_storage.plugin import OBJECT_STORAGE

    return OBJECT_STORAGE


def _register(sink, frequency: str, project: str) -> str:
    from exports_pipeline.engine.partitions import register_project

    return register_project(sink, frequency, project)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    state = open_state(settings)
    by_kind = {name: kind.rows(state) for name, kind in KINDS.items()}
    if args.json:
        print(json.dumps([row for rows in by_kind.values() for row in rows], indent=2))
        return 0
    if not any(by_kind.values()):
        print("no integrations")
        return 0
    printed = False
    for name, kind in KINDS.items():
        if by_kind[name]:
            if printed:
                print()
            kind.print_rows(by_kind[name])
            printed = True
    return 0


def _print_rows(columns: tuple[str, ...]):
    """A kind's `print_rows`: the plain table of its public rows (None as `-`, errors shortened)."""
    def print_rows(rows: list[dict[str, Any]]) -> None:
        from exports_pipeline.cli import print_table

        for row in rows:
            for name, value in row.items():
                if isinstance(value, bool):
                    row[name] = "yes" if value else "no"
                elif value is None:
                    row[name] = "-"
            error = row.get("last_error") or "-"
            row["last_error"] = error if len(error) <= 60 else error[:59] + "…"
        print_table(rows, columns, out=sys.stdout)
    return print_rows


def _print_blob_rows(rows: list[dict[str, Any]]) -> None:
    from exports_pipeline.cli import print_table

    for row in rows:
        row["formats"] = ",".join(row["formats"])
        row["enabled"] = "yes" if row["enabled"] else "no"
        row["endpoint"] = row["endpoint"] or "-"
        row["access_key_id"] = row["access_key_id"] or "-"
        row["start_date"] = (row["start_date"] or "-")[:10]
        row["last_sync_at"] = row["last_sync_at"] or "-"
        error = row["last_error"] or "-"
        row["last_error"] = error if len(error) <= 60 else error[:59] + "…"
    print_table(rows, ("project", "kind", "destination", "endpoint", "frequency", "formats", "compression", "mode",
                       "start_date", "enabled", "last_sync_at", "last_error", "access_key_id", "secret"),
                out=sys.stdout)  # print_table's default is bound at import, before any redirection


# ------------------------------------------------------------------------------------- the kind registry


@dataclass(frozen=True)
class Kind:
    """One integration kind's commands (see the module docstring)."""

    name: str  # the --kind value
    label: str  # in messages: "object-storage", "PostHog"
    get: Callable[[Any, str], Any | None]  # (state, project) -> the row or None
    update_flags: tuple[str, ...]  # `update` options (argparse dests) that belong to this kind
    update: Callable[..., int]
    disable: Callable[..., int]
    enable: Callable[..., int]
    remove: Callable[..., int]
    validate: Callable[..., int]
    rows: Callable[[Any], list[dict[str, Any]]]  # public rows for `list` (never a secret)
    print_rows: Callable[[list[dict[str, Any]]], None]
    register_add: Callable[[argparse._SubParsersAction], None] | None = None
    add_update_options: Callable[..., None] | None = None


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> None:
    KINDS[kind.name] = kind


def resolve(args: argparse.Namespace, state, project: str) -> tuple[Kind, Any]:
    """The kind and row a command acts on: `--kind`, else the project's only integration."""
    if getattr(args, "kind", None):
        kind = KINDS[args.kind]
        found = kind.get(state, project)
        if found is None:
            raise ValueError(f"--project: project {project!r} has no {kind.label} integration "
                             "(`exports-pipeline integrations list` shows them)")
        return kind, found
    present = [(kind, row) for kind in KINDS.values() if (row := kind.get(state, project)) is not None]
    if not present:
        raise ValueError(f"--project: project {project!r} has no integration "
                         "(`exports-pipeline integrations list` shows them)")
    if len(present) > 1:
        names = [kind.name for kind, _ in present]
        raise ValueError(f"--kind: project {project!r} has {len(present)} integrations ({', '.join(names)}); "
                         f"say which with --kind {'|'.join(names)}")
    return present[0]


def _dispatch(action: str):
    def command(args: argparse.Namespace, settings: Settings) -> int:
        project = require_project(args.project, strict=False)
        state = open_state(settings)
        kind, existing = resolve(args, state, project)
        if action == "update":
            given = [(flag, other) for other in KINDS.values() if other is not kind for flag in other.update_flags
                     if getattr(args, flag, None) not in (None, False) and flag not in kind.update_flags]
            if given:
                flag, other = given[0]
                raise ValueError(f"--{flag.replace('_', '-')} applies to {other.label} integrations (--kind "
                                 f"{other.name}), not to the {kind.label} integration of project {project!r}")
        return getattr(kind, action)(args, settings, state, existing)
    command.__name__ = f"cmd_{action}"
    return command


cmd_update = _dispatch("update")
cmd_disable = _dispatch("disable")
cmd_enable = _dispatch("enable")
cmd_remove = _dispatch("remove")
cmd_validate = _dispatch("validate")


# ------------------------------------------------------------------------------------------- blob handlers

_BLOB_UPDATE_FLAGS = ("destination", "frequency", "formats", "compression", "mode", "start_date", "endpoint",
                      "region", "force_path_style", "access_key_id", "secret_access_key_stdin", "sse",
                      "sse_kms_key_id", "max_file_size_mb", "key_template")


def _blob_update(args: argparse.Namespace, settings: Settings, state, existing: BlobIntegration) -> int:
    from exports_pipeline.state.models import blob_cursor_sink

    project = existing.project_id
    secret = _read_secret(args)
    option_names = ("destination", "frequency", "formats", "compression", "mode", "start_date", "endpoint", "region",
                    "force_path_style", "access_key_id", "sse", "sse_kms_key_id", "max_file_size_mb", "key_template")
    if secret is None and all(getattr(args, name) is None for name in option_names):
        raise ValueError("update: nothing to change; give at least one option (see `integrations update --help`)")
    integration, directory = _build(args, existing, secret, settings)
    changed = _changed_fields(existing, integration, secret is not None)
    if not changed:
        print(f"project {project}: nothing changed")
        return 0
    created = _ensure_directory(directory)
    saved = state.upsert_blob_integration(integration)
    replanned = (existing.export_mode, existing.export_start_date) != (saved.export_mode, saved.export_start_date)
    if replanned:
        # The store already forgets the cursors on a mode/start change; said here too, explicitly.
        for frequency in dict.fromkeys((existing.export_frequency, saved.export_frequency)):
            state.reset_cursor(blob_cursor_sink(frequency), project)
    if created:
        print(f"created directory {directory}")
    print(f"updated object-storage integration for project {project}: {', '.join(changed)}")
    if replanned:
        start = _day(saved.export_start_date) or "the project's first event"
        print(f"export mode/start changed to {saved.export_mode} from {start}: the sync cursor was reset and "
              "history will be re-planned (windows already exported are written again)")
    _print_summary(saved)
    _say_where_earlier_exports_stay(state, existing, saved)
    return 0


def _say_where_earlier_exports_stay(state, before: BlobIntegration, after: BlobIntegration) -> None:
    """A new destination (bucket, prefix, endpoint or type) leaves the earlier exports where they are:
    stale cleanup only ever touches the destination a window is exported to."""
    from exports_pipeline.urls import mask_url

    where = ("type", "bucket_name", "prefix", "endpoint")
    if all(getattr(before, f) == getattr(after, f) for f in where):
        return
    old = _destination_url(before)
    count = sum(1 for e in state.list_event_log(before.project_id)
                if e.bucket_name == before.bucket_name and e.prefix == (before.prefix or ""))
    server = f" at {mask_url(before.endpoint)}" if before.endpoint else ""
    print(f"earlier exports stay where they were written: {old}{server} ({count} object(s) recorded in "
          f"event_log); new windows go to {_destination_url(after)}. To remove the earlier ones, run "
          f"`exports-pipeline export-objects delete --project {before.project_id}` (a dry run; add --yes): it "
          "deletes every recorded object where it was written, the new destination's too")


def _blob_disable(args: argparse.Namespace, settings: Settings, state, existing: BlobIntegration) -> int:
    project = existing.project_id
    state.disable_blob_integration(project)
    print(f"disabled the object-storage integration of project {project} (settings and sync cursor kept; "
          f"`integrations enable --project {project}` resumes it)")
    return 0


def _blob_enable(args: argparse.Namespace, settings: Settings, state, previous: BlobIntegration) -> int:
    project = previous.project_id
    state.enable_blob_integration(project)  # also clears last_error and the notification cooldown
    note = " and cleared its last error" if previous.last_error else ""
    print(f"enabled the object-storage integration of project {project}{note}")
    print(_register(_object_storage(), previous.export_frequency, project))
    return 0


def _blob_remove(args: argparse.Namespace, settings: Settings, state, existing: BlobIntegration) -> int:
    project = existing.project_id
    state.delete_blob_integration(project)
    print(f"removed the object-storage integration of project {project} (its sync cursors are forgotten)")
    entries = state.list_event_log(project)
    if not entries:
        print("no exported objects are recorded for it")
        return 0
    remote = sum(1 for e in entries if not e.bucket_name.startswith("/"))
    print(f"exported objects were NOT deleted: {len(entries)} are still recorded in event_log. "
          f"To delete them: `exports-pipeline export-objects delete --project {project}` "
          "(a dry run; add --yes to delete)")
    if remote:
        again = f" (it was {_destination_url(existing)})" if existing.type != "LOCAL" else ""
        print(f"note: {remote} of them are in S3, which export-objects reaches only with an integration's endpoint "
              f"and credentials: re-add an integration pointing at that bucket{again} to delete them")
    return 0


def _blob_validate(args: argparse.Namespace, settings: Settings, state, integration: BlobIntegration) -> int:
    from exports_pipeline.errors import ConfigError, DeploymentFault, ExportsError
    from exports_pipeline.resources.object_store.resource import ObjectStoreResource
    from exports_pipeline.sinks.object_storage.export import destination_for

    project = integration.project_id
    try:
        destination = destination_for(integration, optional_box(settings))
    except DeploymentFault as exc:  # this deployment's setting, not the destination: nothing was probed
        print(f"exports-pipeline: {exc} (fix {exc.setting})", file=sys.stderr)
        return 2
    if not integration.enabled:
        print(f"note: the integration of project {project} is disabled")
    try:
        with ObjectStoreResource().open(destination) as store:
            result = store.validate()
    except ConfigError:
        raise
    except ExportsError as exc:
        print(f"FAIL {exc.code or type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"PASS {result.uri}")
    print(f"  {result.detail}")
    return 0


# ------------------------------------------------------------------------------------------------ building


def _existing(state, project: str) -> BlobIntegration:
    found = state.get_blob_integration(project)
    if found is None:
        raise ValueError(f"--project: project {project!r} has no object-storage integration "
                         "(`exports-pipeline integrations list` shows them)")
    return found


def _read_secret(args: argparse.Namespace) -> str | None:
    from_env = os.environ.get(SECRET_ENV) or None
    if args.secret_access_key_stdin:
        if from_env is not None:
            raise ValueError(f"--secret-access-key-stdin: {SECRET_ENV} is set too; give the secret one way only")
        line = sys.stdin.readline().rstrip("\r\n")
        if not line.strip():
            raise ValueError("--secret-access-key-stdin: stdin gave no secret (expected it on the first line)")
        return line
    return from_env


def _build(args: argparse.Namespace, base: BlobIntegration | None, secret: str | None,
           settings: Settings) -> tuple[BlobIntegration, str | None]:
    """The integration these options describe (on top of `base` for an update), fully validated, with a new
    secret encrypted; plus the directory of a file:// destination (created by the caller)."""
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.errors import ConfigError
    from exports_pipeline.sinks.object_storage.keys import validate_template
    from exports_pipeline.resources.object_store.destination import Destination
    from exports_pipeline.state.models import BlobIntegration

    # Where: scheme, bucket, prefix from --destination, else from the stored integration.
    if args.destination is not None:
        try:
            parsed = Destination.from_url(args.destination)
        except ConfigError as exc:
            raise ValueError(f"--destination: {exc}") from None
        scheme, bucket, prefix = parsed.scheme, parsed.bucket, parsed.prefix
    else:
        assert base is not None
        scheme = "file" if base.type == "LOCAL" else "s3"
        bucket, prefix = base.bucket_name, base.prefix
    keep_s3 = base is not None and base.type != "LOCAL" and scheme == "s3"  # stored S3 settings still apply

    def pick(name: str, stored: Any, default: Any = None) -> Any:
        given = getattr(args, name)
        return given if given is not None else (stored if keep_s3 else default)

    endpoint = pick("endpoint", base and base.endpoint) or None
    region = pick("region", base and base.region, "auto") or "auto"
    force_path_style = bool(pick("force_path_style", base and base.force_path_style, False))
    access_key_id = pick("access_key_id", base and base.access_key_id) or None
    if args.sse is not None and args.sse not in SSE_CHOICES:
        raise ValueError(f"--sse must be one of AES256, aws:kms (or none to remove it), got {args.sse!r}")
    sse = SSE_CHOICES[args.sse] if args.sse is not None else (base.sse if keep_s3 else None)
    sse_kms_key_id = args.sse_kms_key_id or None
    if args.sse_kms_key_id is None and keep_s3 and sse == "aws:kms":
        sse_kms_key_id = base.sse_kms_key_id
    stored_secret = base.secret_access_key if keep_s3 and access_key_id is not None else None

    if scheme == "file":
        given = [flag for flag, value in (("--endpoint", args.endpoint), ("--region", args.region),
                                          ("--force-path-style", args.force_path_style),
                                          ("--access-key-id", args.access_key_id), ("--sse", args.sse),
                                          ("--sse-kms-key-id", args.sse_kms_key_id)) if value]
        if given:
            raise ValueError(f"{given[0]} only applies to s3:// destinations, not to a file:// directory")
        if secret is not None:
            raise ValueError(f"{SECRET_SOURCES}: a secret access key was given but a file:// destination "
                             "takes no credentials")
    else:
        if access_key_id is not None and secret is None and stored_secret is None:
            raise ValueError(f"--access-key-id needs its secret: set {SECRET_ENV} or pass --secret-access-key-stdin")
        if secret is not None and access_key_id is None:
            raise ValueError(f"{SECRET_SOURCES}: a secret access key was given without --access-key-id")

    # The same validation the export applies when it opens the destination.
    try:
        checked = Destination(
            scheme=scheme, bucket=bucket, prefix=prefix, endpoint_url=endpoint,
            region="us-east-1" if region == "auto" else region, force_path_style=force_path_style,
            access_key_id=access_key_id, sse=sse, sse_kms_key_id=sse_kms_key_id,
            secret_access_key=secret if secret is not None else (
                _STORED_SECRET_PLACEHOLDER if stored_secret is not None else None),
        ) if scheme == "s3" else Destination(scheme="file", bucket=bucket)
    except ConfigError as exc:
        raise ValueError(f"{_FIELD_FLAGS.get(exc.field or '', '--destination')}: {exc}") from None
    endpoint = checked.endpoint_url if scheme == "s3" else None

    frequency = args.frequency if args.frequency is not None else base.export_frequency
    if frequency not in FREQUENCIES:
        raise ValueError(f"--frequency must be one of {', '.join(FREQUENCIES)}, got {frequency!r}")
    formats = tuple(args.formats) if args.formats is not None else base.file_types
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"--format: each format may be given once, got {', '.join(formats)}")
    compression = args.compression if args.compression is not None else (base.compression if base else "none")
    if compression not in COMPRESSIONS:
        raise ValueError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    mode, start = _mode_and_start(args, base)

    max_mb = base.max_file_size_mb if base else None
    if args.max_file_size_mb is not None:
        # At most one S3 object (5 TiB): no file can be bigger. This also keeps the value inside the INTEGER
        # column on both databases (PostgreSQL's is 32-bit; SQLite's 64-bit overflowed with a traceback).
        from exports_pipeline.resources.object_store.sizing import S3_MAX_OBJECT_SIZE, MiB

        max_allowed = S3_MAX_OBJECT_SIZE // MiB
        text = args.max_file_size_mb.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"--max-file-size-mb must be a whole number of MiB (0 for no limit), got {text!r}")
        digits = text.lstrip("0") or "0"  # length first: int() refuses strings of over 4,300 digits
        if len(digits) > len(str(max_allowed)) or int(digits) > max_allowed:
            raise ValueError(f"--max-file-size-mb must be at most {max_allowed} (5 TiB, the largest S3 "
                             f"object; 0 for no limit), got {text[:30]!r}{'...' if len(text) > 30 else ''}")
        max_mb = int(digits) or None
    template = args.key_template if args.key_template is not None else (base.key_template if base else None)
    if template == "" and base is None:
        raise ValueError("--key-template must not be empty (leave it out for the default template)")
    template = template or None
    if template is not None:
        try:
            validate_template(template)
        except ConfigError as exc:
            raise ValueError(f"--key-template: {exc}") from None

    if secret is not None:
        encrypted = SecretBox(settings.require_encryption_key()).encrypt(secret)
    else:
        encrypted = stored_secret
    kind = "LOCAL" if scheme == "file" else ("S3_COMPATIBLE" if endpoint else "S3")
    try:
        integration = BlobIntegration(
            project_id=args.project, type=kind, bucket_name=bucket, prefix=prefix if scheme == "s3" else "",
            export_frequency=frequency, file_types=formats, compression=compression, export_mode=mode,
            export_start_date=start, endpoint=endpoint, region=region, force_path_style=force_path_style,
            access_key_id=access_key_id, secret_access_key=encrypted, sse=sse, sse_kms_key_id=sse_kms_key_id,
            max_file_size_mb=max_mb, key_template=template, enabled=base.enabled if base else True,
            **({} if base is None else {f: getattr(base, f) for f in ("export_source", "export_field_groups",
                                                                        "export_tuning")}),
        )
    except ValueError as exc:  # the model's own checks; the options above should have caught everything
        raise ValueError(f"invalid integration: {exc}") from None
    return integration, bucket if scheme == "file" else None


def _mode_and_start(args: argparse.Namespace, base: BlobIntegration | None) -> tuple[str, dt.datetime | None]:
    if args.mode is not None:
        mode = MODES.get(args.mode.strip().lower())
        if mode is None:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    else:
        assert base is not None
        mode = base.export_mode
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if args.start_date is not None:
        try:
            day = dt.date.fromisoformat(args.start_date.strip())
        except ValueError:
            raise ValueError(f"--start-date must be a date in YYYY-MM-DD form, got {args.start_date!r}") from None
        if day > today.date():
            raise ValueError(f"--start-date must not be in the future (today is {today.date()} UTC), got {day}")
        if mode != "FROM_CUSTOM_DATE":
            raise ValueError(f"--start-date only applies with --mode from_custom_date (the mode is {mode.lower()})")
        return mode, dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    if mode == "FULL_HISTORY":
        return mode, None
    if mode == "FROM_TODAY":
        keep = args.mode is None and base is not None and base.export_mode == "FROM_TODAY"
        return mode, base.export_start_date if keep else today
    if base is not None and base.export_mode == "FROM_CUSTOM_DATE":
        return mode, base.export_start_date
    raise ValueError("--start-date is required with --mode from_custom_date")


def _ensure_directory(directory: str | None) -> bool:
    """Create a file:// destination's directory if missing; True when it was created."""
    if directory is None or os.path.isdir(directory):
        return False
    try:
        os.makedirs(directory)
    except OSError as exc:
        raise ValueError(f"--destination: cannot create directory {directory}: {exc.strerror or exc}") from None
    return True


def _changed_fields(old: BlobIntegration, new: BlobIntegration, secret_given: bool) -> list[str]:
    skip = {"secret_access_key", "next_sync_at", "last_sync_at", "run_started_at", "last_error", "last_error_at",
            "last_failure_notification_sent_at", "created_at", "updated_at"}
    changed = [f.name for f in dataclasses.fields(new)
               if f.name not in skip and getattr(old, f.name) != getattr(new, f.name)]
    if secret_given:
        changed.append("secret_access_key (replaced)")
    elif old.secret_access_key and not new.secret_access_key:
        changed.append("secret_access_key (removed)")
    return changed


# ------------------------------------------------------------------------------------------------ output


def _destination_url(integration: BlobIntegration) -> str:
    if integration.type == "LOCAL":
        return PurePosixPath(integration.bucket_name).as_uri().rstrip("/") + "/"
    return f"s3://{integration.bucket_name}/{integration.prefix}"


def iso(value: dt.datetime | None) -> str | None:
    """A stored time as shown in `list`: ISO-8601 UTC with a Z."""
    return _iso(value)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _day(value: dt.datetime | None) -> str | None:
    return f"{value:%Y-%m-%d}" if value else None


def _public_row(i: BlobIntegration) -> dict[str, Any]:
    """Everything an operator may see of an integration: never the secret, nor its ciphertext."""
    return {
        "project": i.project_id, "kind": "blob", "type": i.type, "destination": _destination_url(i),
        "endpoint": i.endpoint, "region": i.region, "force_path_style": i.force_path_style,
        "frequency": i.export_frequency, "formats": list(i.file_types), "compression": i.compression,
        "mode": i.export_mode, "start_date": _iso(i.export_start_date), "enabled": i.enabled,
        "last_sync_at": _iso(i.last_sync_at), "last_error": i.last_error, "last_error_at": _iso(i.last_error_at),
        "access_key_id": i.access_key_id, "secret": MASKED if i.secret_access_key else "-",
        "sse": i.sse, "sse_kms_key_id": i.sse_kms_key_id, "max_file_size_mb": i.max_file_size_mb,
        "key_template": i.key_template,
    }


def _print_summary(i: BlobIntegration) -> None:
    row = _public_row(i)
    lines = [
        ("destination", row["destination"] + (f" (endpoint {i.endpoint})" if i.endpoint else "")),
        ("type", i.type),
        ("frequency", i.export_frequency),
        ("formats", ", ".join(i.file_types) + f" (compression {i.compression})"),
        ("mode", i.export_mode + (f" from {_day(i.export_start_date)}" if i.export_start_date else "")),
        ("credentials", f"access key id {i.access_key_id}, secret: {row['secret']} (stored encrypted)"
         if i.access_key_id else "default AWS credential chain" if i.type != "LOCAL" else "-"),
        ("enabled", "yes" if i.enabled else "no"),
    ]
    if i.sse:
        lines.append(("sse", i.sse + (f" (key {i.sse_kms_key_id})" if i.sse_kms_key_id else "")))
    if i.max_file_size_mb:
        lines.append(("max file size", f"{i.max_file_size_mb} MiB"))
    if i.key_template:
        lines.append(("key template", i.key_template))
    for name, value in lines:
        print(f"  {name:<14} {value}")


# ------------------------------------------------------------------------------------------- registrations

def _register_kinds() -> None:
    from exports_pipeline.commands import integrations_mixpanel as mixpanel
    from exports_pipeline.commands import integrations_posthog as posthog

    register_kind(Kind(
        name="blob", label="object-storage", get=lambda state, project: state.get_blob_integration(project),
        update_flags=_BLOB_UPDATE_FLAGS, update=_blob_update, disable=_blob_disable, enable=_blob_enable,
        remove=_blob_remove, validate=_blob_validate,
        rows=lambda state: [_public_row(i) for i in state.list_blob_integrations()], print_rows=_print_blob_rows))
    register_kind(Kind(
        name="posthog", label=posthog.LABEL, get=posthog.get, update_flags=posthog.UPDATE_FLAGS,
        update=posthog.update, disable=posthog.disable, enable=posthog.enable, remove=posthog.remove,
        validate=posthog.validate, rows=posthog.rows, print_rows=_print_rows(posthog.TABLE_COLUMNS),
        register_add=posthog.register_add, add_update_options=posthog.add_options))
    register_kind(Kind(
        name="mixpanel", label=mixpanel.LABEL, get=mixpanel.get, update_flags=mixpanel.UPDATE_FLAGS,
        update=mixpanel.update, disable=mixpanel.disable, enable=mixpanel.enable, remove=mixpanel.remove,
        validate=mixpanel.validate, rows=mixpanel.rows, print_rows=_print_rows(mixpanel.TABLE_COLUMNS),
        register_add=mixpanel.register_add, add_update_options=mixpanel.add_options))


_register_kinds()
