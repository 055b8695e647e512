"""Object storage for exports: S3 (and S3-compatible services) or a local directory.

The only code that speaks S3 or writes destination files. Start from ``ObjectStoreResource.open``.
"""

from exports_pipeline.resources.object_store.base import (
    ObjectStore,
    ObjectWriter,
    StoreSettings,
    ValidationResult,
    WrittenObject,
)
from exports_pipeline.resources.object_store.classify import classify_local_error, classify_s3_error
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.resources.object_store.local import LocalObjectStore
from exports_pipeline.resources.object_store.resource import ObjectStoreResource
from exports_pipeline.resources.object_store.s3 import S3ObjectStore
from exports_pipeline.resources.object_store.sizing import choose_part_size

__all__ = [
    "Destination",
    "LocalObjectStore",
    "ObjectStore",
    "ObjectStoreResource",
    "ObjectWriter",
    "S3ObjectStore",
    "StoreSettings",
    "ValidationResult",
    "WrittenObject",
    "choose_part_size",
    "classify_local_error",
    "classify_s3_error",
]
