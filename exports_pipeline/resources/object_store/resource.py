"""The Dagster face of object storage: tunables as resource config, stores opened per destination.

Destinations differ per project (each integration names its own bucket and credentials), so the
resource holds only how to talk to storage; ``open(destination)`` gives a store for one of them.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from exports_pipeline.resources.object_store.base import ObjectStore, StoreSettings
from exports_pipeline.resources.object_store.destination import Destination
from exports_pipeline.resources.object_store.local import LocalObjectStore
from exports_pipeline.resources.object_store.s3 import S3ObjectStore
from exports_pipeline.resources.object_store.sizing import MiB


class ObjectStoreResource(dg.ConfigurableResource):
    """S3 / S3-compatible / local-directory object storage for exports."""

    min_part_size_mb: int = Field(
        default=8, description="Smallest multipart part in MiB (S3 refuses parts under 5 MiB).")
    max_part_size_mb: int = Field(
        default=512, description="Largest part in MiB (S3 max 5120); caps part size for huge objects.")
    default_part_size_mb: int = Field(
        default=64, description="Part size in MiB when the expected size is unknown "
                                "(capacity = 10,000 × this).")
    max_concurrency: int = Field(
        default=4, description="Parts in flight per upload; memory ≈ part size × (this + 1).")
    max_attempts: int = Field(default=5, description="Attempts per S3 request on transient errors.")
    backoff_base_seconds: float = Field(default=0.5, description="First retry waits up to this long.")
    backoff_max_seconds: float = Field(default=30.0, description="No retry waits longer than this.")
    connect_timeout: float = Field(default=10.0, description="Seconds to establish a connection.")
    read_timeout: float = Field(default=60.0, description="Seconds a socket may stay silent.")

    def settings(self) -> StoreSettings:
        """The validated tunables in bytes; raises ``ConfigError`` naming a bad field."""
        return StoreSettings(
            min_part_size=self.min_part_size_mb * MiB,
            max_part_size=self.max_part_size_mb * MiB,
            default_part_size=self.default_part_size_mb * MiB,
            max_concurrency=self.max_concurrency,
            max_attempts=self.max_attempts,
            backoff_base_seconds=self.backoff_base_seconds,
            backoff_max_seconds=self.backoff_max_seconds,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def open(self, destination: Destination | str) -> ObjectStore:
        """A store for ``destination`` (a ``Destination`` or a URL); close it when done."""
        if isinstance(destination, str):
            destination = Destination.from_url(destination)
        settings = self.settings()
        if destination.scheme == "file":
            return LocalObjectStore(destination)
        return S3ObjectStore(destination, settings)
