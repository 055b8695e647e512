"""What a window's earlier attempts left, and how this attempt keeps from leaving anything itself.

A run can die anywhere (killed worker, lost node, OOM). The promises that survive it:
- every object that can exist is in `event_log` before it is committed (`claim`), so the next run of the
  window and `export-objects delete` find it; a claim refuses a key another partition owns, so no key
  template can make one window overwrite or delete another's objects;
- the next run of the window first clears what earlier attempts left: pending multipart uploads under
  its recorded keys, hidden temporary files, and its scratch directory (`window_scratch`);
- stale cleanup removes only earlier attempts of the same window at the same destination (endpoint,
  bucket and prefix): a changed prefix or endpoint leaves the previous complete export where it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator

from filelock import FileLock, Timeout

from exports_pipeline.errors import ConfigError, TransientFault
from exports_pipeline.resources.object_store.base import ObjectStore
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.state.models import EventLogEntry

SCRATCH_PREFIX = ".exports-scratch-"


def place_of(destination: Destination) -> dict:
    """The event_log columns that say where an object under `destination` lives."""
    s3 = destination.scheme == "s3"
    return {"endpoint": (destination.endpoint_url or "") if s3 else "",
            "region": destination.region if s3 else None, "prefix": destination.prefix}


def log_entries(store: ObjectStore, project_id: str, entity_type: str, entity_id: str,
                keys: Iterable[str]) -> list[EventLogEntry]:
    place = place_of(store.destination)
    return [EventLogEntry(bucket_name=store.destination.bucket, bucket_path=key, project_id=project_id,
                          entity_type=entity_type, entity_id=entity_id,
                          event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, store.uri(key))), **place)
            for key in keys]


def claim(state, store: ObjectStore, project_id: str, entity_type: str, entity_id: str,
          keys: Iterable[str]) -> None:
    """Record `keys` as this entity's before anything is written under them; refuse keys another owns."""
    if state is None:
        return
    taken = state.claim_event_log(log_entries(store, project_id, entity_type, entity_id, keys))
    if taken:
        first = taken[0]
        raise ConfigError(
            f"the key template renders {store.uri(first.bucket_path)} for {entity_id} of project {project_id}, "
            f"but that object belongs to {first.entity_id} of project {first.project_id} ({first.entity_type}); "
            f"nothing was overwritten. Use a key template whose keys differ per project, frequency, window, "
            f"format and part (the default does)", field="key_template")


def recorded_here(state, store: ObjectStore, project_id: str, entity_type: str,
                  entity_id: str) -> list[EventLogEntry]:
    """This entity's event_log rows at this very destination (endpoint, bucket and prefix)."""
    if state is None:
        return []
    place = place_of(store.destination)
    return [e for e in state.list_event_log(project_id, entity_type, entity_id)
            if e.bucket_name == store.destination.bucket and e.endpoint == place["endpoint"]
            and e.prefix == place["prefix"]]


def delete_stale(state, store: ObjectStore, earlier: list[EventLogEntry], keep: set[str]) -> list[str]:
    """Delete earlier attempts' objects that the new manifest does not list: objects first, then their
    rows, so a crash in between loses nothing."""
    stale = [e for e in earlier if e.bucket_path not in keep]
    if not stale:
        return []
    keys = sorted(e.bucket_path for e in stale)
    store.discard_incomplete(keys)
    store.delete_keys(keys)
    if state is not None:
        state.delete_event_log([e.id for e in stale if e.id])
    return keys


def _lock_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), "exports-pipeline-locks")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def window_scratch(store: ObjectStore, entity_type: str, entity_id: str) -> Iterator[str]:
    """This window's own scratch directory at this destination, emptied of what a killed attempt left,
    held under a lock so two runs of one window never share it, and removed at the end.

    The name is derived from the destination and the window (not random), which is what lets the next
    attempt find and clear a dead one's files.
    """
    where = f"{store.destination.url}\0{store.destination.endpoint_url or ''}\0{entity_type}\0{entity_id}"
    tag = hashlib.sha256(where.encode()).hexdigest()[:24]
    lock = FileLock(os.path.join(_lock_dir(), f"{tag}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TransientFault(f"another run is exporting {entity_id} to {store.destination.url} right now; "
                             "this attempt will be retried", code="WindowBusy") from None
    path = os.path.join(store.scratch_root(), f"{SCRATCH_PREFIX}{tag}")
    try:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        lock.release()
