"""`exports-pipeline export-objects delete`: delete every object the pipeline wrote for a project.

What was written is known from `event_log`: one row per object with the place it was written (S3 endpoint
and region, bucket or local directory, full key). Rows are grouped by place and each group is deleted
*there*, never at whatever endpoint the integration names today: the same bucket and key on another server
is another object. A local directory (an absolute path) is opened directly; an S3 place is reached with the
project's integration's credentials (event_log stores no secrets), and if they are refused there the
rows are kept and the command says so. Pending multipart uploads that killed runs left under the keys are
aborted too. Objects go first and their rows after, chunk by chunk, so a crash in between leaves rows for
objects that are already gone (deleting a missing key is fine) but never objects nobody knows about.
Without `--yes` nothing is deleted: the command lists what would be, and where.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exports_pipeline.commands import open_state, optional_box, require_project
from exports_pipeline.urls import mask_url

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
        epilog="Without --yes this is a dry run: it lists what would be deleted, and where, and changes nothing. "
        "Each object is deleted where it was written (the endpoint and bucket recorded in event_log), with the "
        "project's integration's credentials.")
    d.add_argument("--project", required=True, metavar="P")
    d.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    d.set_defaults(func=cmd_delete)


@dataclass
class _Group:
    endpoint: str
    region: str | None
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
              f"{_where(group)}: {group.refused}; their event_log rows are kept", file=sys.stderr)

    if not args.yes:
        total = sum(len(g.entries) for g in reachable)
        for group in reachable:
            assert group.destination is not None
            print(f"{_where(group)}: {len(group.entries)} object(s)")
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
                    keys = [e.bucket_path for e in chunk]
                    store.discard_incomplete(keys)  # what killed runs left pending under these keys
                    store.delete_keys(keys)  # raises unless every key is gone
                    done += len(chunk)
                    rows += state.delete_event_log([e.id for e in chunk if e.id])
        except ExportsError as exc:
            failed += 1
            print(f"exports-pipeline: deleting in {_where(group)} failed after {done} of "
                  f"{len(group.entries)} object(s): {exc}; the remaining rows are kept, re-run to retry",
                  file=sys.stderr)
        if group.destination.scheme == "file":
            _prune_empty_directories(group.destination.bucket, [e.bucket_path for e in group.entries[:done]])
        objects += done
        print(f"{_where(group)}: deleted {done} of {len(group.entries)} object(s)")
    kept = len(entries) - rows
    print(f"deleted {objects} object(s) and {rows} event_log row(s) for project {project}"
          + (f"; {kept} row(s) kept" if kept else ""))
    return 1 if failed or refused else 0


def _plan(project: str, entries: Sequence[EventLogEntry], integration: BlobIntegration | None,
          settings: Settings) -> list[_Group]:
    from exports_pipeline.errors import ConfigError, DeploymentFault
    from exports_pipeline.sinks.object_storage.export import destination_for
    from exports_pipeline.resources.object_store.destination import Destination

    by_place: dict[tuple[str, str | None, str], list[EventLogEntry]] = {}
    for entry in entries:
        by_place.setdefault((entry.endpoint, entry.region, entry.bucket_name), []).append(entry)
    base: Destination | None = None
    base_error: str | None = None
    if integration is None:
        base_error = (f"project {project} has no object-storage integration any more, so the credentials for "
                      "this bucket are unknown; re-add the integration (`exports-pipeline integrations add-blob`) "
                      "with them, then run this again")
    elif integration.type == "LOCAL":
        base_error = (f"the integration of project {project} now writes to a local directory, so the credentials "
                      "for this bucket are unknown; point it at an S3 destination with them (`exports-pipeline "
                      "integrations update`), then run this again")
    else:
        try:
            base = destination_for(integration, optional_box(settings))
        except (ConfigError, DeploymentFault, ValueError) as exc:
            base_error = f"the integration's destination cannot be opened: {exc}"

    groups = []
    for (endpoint, region, bucket_name), items in by_place.items():
        group = _Group(endpoint, region, bucket_name, items)
        try:
            if bucket_name.startswith("/"):  # a local directory; S3 bucket names never contain "/"
                if not os.path.isdir(bucket_name):
                    raise _Refused(f"directory {bucket_name} does not exist (not mounted?)")
                group.destination = Destination(scheme="file", bucket=bucket_name)
            elif base is None:
                raise _Refused(base_error or "no S3 settings")
            else:  # the recorded place; keys in event_log are full keys: the bucket alone, no prefix
                group.destination = Destination(
                    scheme="s3", bucket=bucket_name, prefix="", endpoint_url=endpoint or None,
                    region=region or base.region, force_path_style=base.force_path_style,
                    access_key_id=base.access_key_id, secret_access_key=base.secret_access_key,
                )
        except _Refused as exc:
            group.refused = str(exc)
        except ConfigError as exc:
            group.refused = f"not a valid destination: {exc}"
        groups.append(group)
    return groups


class _Refused(Exception):
    pass


def _where(group: _Group) -> str:
    """The place as the dry run shows it: the bucket and the server it lives on."""
    if group.bucket_name.startswith("/"):
        return f"directory {group.bucket_name}"
    server = group.endpoint or f"AWS S3 ({group.region or 'default region'})"
    return f"s3://{group.bucket_name} at {mask_url(server)}"


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
