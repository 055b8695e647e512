"""Object keys: deterministic for (project, frequency, window, format, part), rendered from a template.

Determinism is what makes re-runs idempotent: a retry writes the same keys, so it overwrites instead
of duplicating, and whatever an earlier attempt wrote that the new manifest does not list is deleted.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import string
from dataclasses import dataclass

from exports_pipeline.errors import ConfigError
from exports_pipeline.windows import FREQUENCY_STEP, Window, key_timestamp, window_floor
from exports_pipeline.formats import COMPRESSIONS, FORMATS, file_extension

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


# `part` may be zero-padded (`{part:05d}`); every other field is rendered exactly as it is. A format spec
# or conversion on a string field can truncate (`{project_id:.1}`), pad past S3's key limit or quote it
# (`!r`), and truncation is how two projects came to share keys.
_PART_SPEC = re.compile(r"^(0?[1-9])?d$")
# Values that stress a template's uniqueness: ids that are prefixes of one another, digits that could run
# into a part number, every extension, windows of every frequency around a year's end.
_SAMPLE_PROJECTS = ("p", "p1", "p11", "1", "11", "p-1", "p.1", "p_1", "p:1", "p@1", "a" * 128)
_SAMPLE_PARTS = (0, 1, 2, 9, 10, 11, 99, 100, 101, 111, 1000, 10000, 99999, 100000, 123456)
_SAMPLE_PREFIX = "pre/fix/"


def validate_template(template: str) -> str:
    """Refuse templates whose keys are not unique per (project, frequency, window, format, part), could
    leave the prefix, or fail to render: checked by rendering the template over values chosen to collide.

    The run guards the same promise again at write time (`export.attempts.claim`): an object that
    event_log records as another partition's is never overwritten or deleted, whatever the template.
    """
    if not isinstance(template, str) or not template:
        raise ConfigError("key template must be a non-empty string", field="key_template")
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise ConfigError(f"key template {template!r} is malformed: {exc}", field="key_template") from None
    fields = {name for name, _, _ in parsed}
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ConfigError(f"key template uses unknown fields {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}",
                          field="key_template")
    for name, spec, conv in parsed:
        if conv:
            raise ConfigError(f"key template field {{{name}!{conv}}}: conversions are not allowed; write "
                              f"{{{name}}}", field="key_template")
        if spec and not (name == "part" and _PART_SPEC.match(spec)):
            allowed = " (only zero-padding such as {part:05d} is allowed)" if name == "part" else ""
            raise ConfigError(f"key template field {{{name}:{spec}}}: format specs are not allowed{allowed}; "
                              f"write {{{name}}}", field="key_template")
    missing = REQUIRED_FIELDS - fields
    if missing or not ({"window_start", "window_end"} & fields):
        need = sorted(missing | ({"window_start"} if not {"window_start", "window_end"} & fields else set()))
        raise ConfigError(f"key template must contain {need} so every window, format and part has its own key",
                          field="key_template")
    if not template.startswith("{prefix}") or sum(1 for name, _, _ in parsed if name == "prefix") != 1:
        raise ConfigError("key template must start with {prefix} and use it once", field="key_template")
    _check_renders_unique(template)
    return template


def _check_renders_unique(template: str) -> None:
    """Render the template for colliding sample values; any shared key, unsafe key or key that leaves the
    prefix refuses it, naming the two things that would share a key."""
    seen: dict[str, str] = {}
    for frequency in ("hourly", "daily", "weekly"):
        step = FREQUENCY_STEP[frequency]
        first = window_floor(dt.datetime(2026, 12, 31, 22, tzinfo=dt.UTC), frequency)
        windows = [Window(first + step * i, first + step * (i + 1)) for i in range(3)]
        for project in _SAMPLE_PROJECTS:
            for window in windows:
                ctx = KeyContext(_SAMPLE_PREFIX, project, frequency, window)
                what = f"project {project!r}, {frequency} window {key_timestamp(window.start)}"
                renders = [(manifest_key(template, ctx), f"the manifest of {what}")]
                for fmt_name, fmt in FORMATS.items():
                    for ext in sorted({file_extension(fmt, c) for c in COMPRESSIONS}):
                        renders += [(data_key(template, ctx, fmt_name, ext, part),
                                     f"{what}, {fmt_name} .{ext} part {part}") for part in _SAMPLE_PARTS]
                for key, label in renders:
                    _check_stays_under_prefix(key, label)
                    if key in seen and seen[key] != label:
                        raise ConfigError(f"key template gives {seen[key]} and {label} the same key {key!r}; "
                                          "separate the fields with '/' or other literal text",
                                          field="key_template")
                    seen[key] = label


def _check_stays_under_prefix(key: str, label: str) -> None:
    rest = key[len(_SAMPLE_PREFIX):] if key.startswith(_SAMPLE_PREFIX) else None
    if not rest or any(part in ("", ".", "..") for part in rest.split("/")):
        raise ConfigError(f"key template renders {key!r} for {label}: keys must stay under the prefix, without "
                          "empty, '.' or '..' path segments", field="key_template")
    if len(key.encode()) > 1024 - 200:  # room for a real prefix: S3 keys end at 1024 bytes
        raise ConfigError(f"key template renders a {len(key.encode())}-byte key for {label}; keep keys short",
                          field="key_template")


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
