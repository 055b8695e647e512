"""`exports-pipeline export-objects delete`: delete every object the pipeline wrote for a project.

What was written is known from `event_log` (one row per object, with the bucket or directory and the full
key). Rows are grouped by `bucket_name`: a local directory (an absolute path) is opened directly; an S3
bucket is reached with the project's current integration's endpoint and credentials, since event_log does
not store them. Objects go first and their rows after, chunk by chunk, so a crash in between leaves rows
for objects that are already gone (deleting a missing key is fine) but never objects nobody knows about.
Without `--yes` nothing is deleted: the command lists what would be.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exports_pipeline.commands import open_state, optional_box, require_project

if TYPE_CHECKING:
    from exports_pipeline.resources.object_store.destination import Destination
    from exports_pipeline.settings import Settings
    from exports_pipeline.state.models import BlobIntegration, EventLogEntry

CHUNK = 1000  # keys per delete call (S3's DeleteObjects limit) and event_log rows forgotten per step


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-objects", help="objects the pipeline exported, as recorded in event_log")
    osub = p.add_subparsers(dest="export_objects_command", required=True)
    d = osub.add_parser(
        "delete", help="delete every exported object of a project, then its event_log rows",
        epilog="Without --yes this is a dry run: it lists what would be deleted and changes nothing. S3 objects "
        "are reached with the project's current integration's endpoint and credentials.")
    d.add_argument("--project", required=True, metavar="P")
    d.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    d.set_defaults(func=cmd_delete)


@dataclass
class _Group:
    bucket_name: str
    entries: list[EventLogEntry]
    destination: Destination | None = None
    refused: str | None = None  # why this group cannot be reached; its rows are kept


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.errors import ExportsError
    from exports_pipeline.resources.object_store.resource import ObjectStoreResource

    project = require_project(args.project, strict=False)
    state = open_state(settings)
    entries = state.list_event_log(project)
    if not entries:
        print(f"no exported objects are recorded for project {project}")
        return 0
    groups = _plan(project, entries, state.get_blob_integration(project), settings)
    reachable = [g for g in groups if g.destination is not None]
    refused = [g for g in groups if g.refused is not None]
    for group in refused:
        print(f"exports-pipeline: cannot delete the {len(group.entries)} object(s) recorded in "
              f"{_where(group.bucket_name)}: {group.refused}; their event_log rows are kept", file=sys.stderr)

    if not args.yes:
        total = sum(len(g.entries) for g in reachable)
        for group in reachable:
            assert group.destination is not None
            print(f"{group.destination.url}: {len(group.entries)} object(s)")
            for entry in group.entries:
                print(f"  {group.destination.uri(entry.bucket_path)}")
        print(f"dry run: would delete {total} object(s) in {len(reachable)} location(s) and their event_log rows "
              f"for project {project}; nothing was deleted. Re-run with --yes to delete.")
        return 0

    resource = ObjectStoreResource()
    objects = rows = 0
    failed = 0
    for group in reachable:
        assert group.destination is not None
        done = 0
        try:
            with resource.open(group.destination) as store:
                for chunk in _chunks(group.entries, CHUNK):
                    store.delete_keys([e.bucket_path for e in chunk])  # raises unless every key is gone
                    done += len(chunk)
                    rows += state.delete_event_log([e.id for e in chunk if e.id])
        except ExportsError as exc:
            failed += 1
            print(f"exports-pipeline: deleting under {group.destination.url} failed after {done} of "
                  f"{len(group.entries)} object(s): {exc}; the remaining rows are kept, re-run to retry",
                  file=sys.stderr)
        if group.destination.scheme == "file":
            _prune_empty_directories(group.destination.bucket, [e.bucket_path for e in group.entries[:done]])
        objects += done
        print(f"{group.destination.url}: deleted {done} of {len(group.entries)} object(s)")
    kept = len(entries) - rows
    print(f"deleted {objects} object(s) and {rows} event_log row(s) for project {project}"
          + (f"; {kept} row(s) kept" if kept else ""))
    return 1 if failed or refused else 0


def _plan(project: str, entries: Sequence[EventLogEntry], integration: BlobIntegration | None,
          settings: Settings) -> list[_Group]:
    from exports_pipeline.errors import ConfigError, DeploymentFault
    from exports_pipeline.export.blob import destination_for
    from exports_pipeline.resources.object_store.destination import Destination

    by_bucket: dict[str, list[EventLogEntry]] = {}
    for entry in entries:
        by_bucket.setdefault(entry.bucket_name, []).append(entry)
    base: Destination | None = None
    base_error: str | None = None
    if integration is None:
        base_error = (f"project {project} has no object-storage integration any more, so the S3 endpoint and "
                      "credentials of this bucket are unknown; re-add the integration (`exports-pipeline "
                      "integrations add-blob`) with them, then run this again")
    elif integration.type == "LOCAL":
        base_error = (f"the integration of project {project} now writes to a local directory, so the S3 endpoint "
                      "and credentials of this bucket are unknown; point it at the bucket again "
                      "(`exports-pipeline integrations update`), then run this again")
    else:
        try:
            base = destination_for(integration, optional_box(settings))
        except (ConfigError, DeploymentFault, ValueError) as exc:
            base_error = f"the integration's destination cannot be opened: {exc}"

    groups = []
    for bucket_name, items in by_bucket.items():
        group = _Group(bucket_name, items)
        try:
            if bucket_name.startswith("/"):  # a local directory; S3 bucket names never contain "/"
                if not os.path.isdir(bucket_name):
                    raise _Refused(f"directory {bucket_name} does not exist (not mounted?)")
                group.destination = Destination(scheme="file", bucket=bucket_name)
            elif base is None:
                raise _Refused(base_error or "no S3 settings")
            else:  # keys in event_log are full keys: the bucket alone, no prefix
                group.destination = Destination(
                    scheme="s3", bucket=bucket_name, prefix="", endpoint_url=base.endpoint_url, region=base.region,
                    force_path_style=base.force_path_style, access_key_id=base.access_key_id,
                    secret_access_key=base.secret_access_key, sse=base.sse, sse_kms_key_id=base.sse_kms_key_id,
                )
        except _Refused as exc:
            group.refused = str(exc)
        except ConfigError as exc:
            group.refused = f"not a valid destination: {exc}"
        groups.append(group)
    return groups


class _Refused(Exception):
    pass


def _where(bucket_name: str) -> str:
    return f"directory {bucket_name}" if bucket_name.startswith("/") else f"s3://{bucket_name}"


def _prune_empty_directories(root: str, keys: list[str]) -> None:
    """Remove the sub-directories the deleted files leave empty (never `root` itself), as S3 has no folders."""
    folders = {os.path.dirname(key) for key in keys if "/" in key}
    for folder in sorted(folders, key=lambda f: f.count("/"), reverse=True):
        while folder:
            try:
                os.rmdir(os.path.join(root, *folder.split("/")))
            except OSError:  # not empty (or already gone): its parents are not empty either
                break
            folder = os.path.dirname(folder)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
