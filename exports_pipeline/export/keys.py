"""Object keys: deterministic for (project, frequency, window, format, part), rendered from a template.

Determinism is what makes re-runs idempotent: a retry writes the same keys, so it overwrites instead
of duplicating, and whatever an earlier attempt wrote that the new manifest does not list is deleted.
"""

from __future__ import annotations

import posixpath
import string
from dataclasses import dataclass

from exports_pipeline.errors import ConfigError
from exports_pipeline.export.windows import Window, key_timestamp

DEFAULT_KEY_TEMPLATE = "{prefix}{project_id}/events/{frequency}/{window_start}_{window_end}/part-{part:05d}.{ext}"
TEMPLATE_FIELDS = frozenset({"prefix", "project_id", "frequency", "window_start", "window_end", "part", "ext",
                             "format", "year", "month", "day", "hour"})
REQUIRED_FIELDS = frozenset({"project_id", "part", "ext"})
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class KeyContext:
    prefix: str
    project_id: str
    frequency: str
    window: Window


def validate_template(template: str) -> str:
    """Refuse templates that could make two objects share a key or escape the prefix."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"key template {template!r} is malformed: {exc}", field="key_template") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ConfigError(f"key template uses unknown fields {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}",
                          field="key_template")
    missing = REQUIRED_FIELDS - fields
    if missing or not ({"window_start", "window_end"} & fields):
        need = sorted(missing | ({"window_start"} if not {"window_start", "window_end"} & fields else set()))
        raise ConfigError(f"key template must contain {need} so every window, format and part has its own key",
                          field="key_template")
    if not template.startswith("{prefix}"):
        raise ConfigError("key template must start with {prefix}", field="key_template")
    return template


def _values(ctx: KeyContext) -> dict:
    start = ctx.window.start
    return {"prefix": ctx.prefix, "project_id": ctx.project_id, "frequency": ctx.frequency,
            "window_start": key_timestamp(start), "window_end": key_timestamp(ctx.window.end),
            "year": f"{start.year:04d}", "month": f"{start.month:02d}", "day": f"{start.day:02d}",
            "hour": f"{start.hour:02d}"}


def data_key(template: str, ctx: KeyContext, fmt: str, ext: str, part: int) -> str:
    key = template.format(**_values(ctx), format=fmt, ext=ext, part=part)
    if key.startswith("/") or "/../" in f"/{key}/":
        raise ConfigError(f"key template renders an unsafe key {key!r}", field="key_template")
    return key


def manifest_key(template: str, ctx: KeyContext) -> str:
    """`manifest.json` in the window's folder; if a custom template puts several windows in one folder,
    the manifest's name carries the window so two windows never share one."""
    folder = posixpath.dirname(data_key(template, ctx, "manifest", "x", 0))
    values = _values(ctx)
    name = MANIFEST_NAME
    if values["window_start"] not in folder and values["window_end"] not in folder:
        name = f"{values['window_start']}_{values['window_end']}_{MANIFEST_NAME}"
    return f"{folder}/{name}" if folder else name
