"""S3's multipart limits and the part size we choose from them.

Langfuse #17282: with the SDK's fixed 5 MiB parts an object is capped at 10,000 parts (48.8 GiB), and a
larger export was eventually committed truncated and reported as a success. Here the part size grows
with the expected size (with headroom for underestimates), and a stream that still outgrows the cap is
aborted with ``ObjectTooLarge`` by the writer, never completed.

The limits are module attributes read at call time, so a test can lower ``S3_MAX_PARTS`` to reach the
overflow path with megabytes instead of terabytes.
"""

from __future__ import annotations

from exports_pipeline.errors import ConfigError, ObjectTooLarge

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

S3_MAX_PARTS = 10_000
S3_MIN_PART_SIZE = 5 * MiB  # every part but the last
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_OBJECT_SIZE = 5 * TiB

# Expected sizes are estimates (row counts × average row width, compression ratios): plan for 25% more.
HEADROOM_NUM, HEADROOM_DEN = 5, 4


def choose_part_size(
    expected_size: int | None,
    *,
    min_part_size: int = 8 * MiB,
    max_part_size: int = 512 * MiB,
    default_part_size: int = 64 * MiB,
) -> int:
    """The smallest whole-MiB part size ≥ max(min, expected × 1.25 / parts limit), capped at max.

    ``expected_size=None`` (unknown) uses ``default_part_size``. Raises ``ObjectTooLarge`` when the
    expected size cannot fit one object at all, so the caller splits before uploading anything.
    """
    if expected_size is None:
        return default_part_size
    if expected_size < 0:
        raise ConfigError(f"expected_size must be ≥ 0, got {expected_size}", field="expected_size")
    if expected_size > S3_MAX_OBJECT_SIZE:
        raise ObjectTooLarge(
            f"expected size {human_bytes(expected_size)} exceeds the largest S3 object: 5 TiB "
            f"(AWS's object size limit; {S3_MAX_PARTS:,} parts × 5 GiB would be 48.8 TiB, but S3 "
            "caps objects at 5 TiB). Split the export into smaller files."
        )
    needed = -(-expected_size * HEADROOM_NUM // (HEADROOM_DEN * S3_MAX_PARTS))  # ceil without floats
    size = max(min_part_size, needed)
    size = -(-size // MiB) * MiB
    size = min(size, max_part_size)
    if expected_size > size * S3_MAX_PARTS:
        raise ObjectTooLarge(
            f"expected size {human_bytes(expected_size)} does not fit {S3_MAX_PARTS:,} parts of at most "
            f"{human_bytes(max_part_size)} (max_part_size_mb); raise max_part_size_mb (S3 allows up to "
            "5120) or split the export into smaller files."
        )
    return size


def human_bytes(n: int) -> str:
    """``n`` with its exact byte count and a readable binary unit, for error messages."""
    for unit, scale in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"
