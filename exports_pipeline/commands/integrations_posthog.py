"""`exports-pipeline integrations ... --kind posthog`: a project's PostHog integration.

The project API key comes from `EXPORTS_POSTHOG_API_KEY` or one line of stdin (`--api-key-stdin`), never
from a flag (shell history, `ps`); it must start with `phc_` (a project key, as Langfuse's form requires),
is stored encrypted with `ENCRYPTION_KEY` and is never printed. The host is an http(s) URL (PostHog Cloud
`https://us.i.posthog.com` / `https://eu.i.posthog.com`, or a self-hosted instance).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from exports_pipeline.commands import open_state, require_project

if TYPE_CHECKING:
    from exports_pipeline.settings import Settings
    from exports_pipeline.state.models import PostHogIntegration
    from exports_pipeline.state.store import StateStore

KEY_ENV = "EXPORTS_POSTHOG_API_KEY"
KEY_SOURCES = f"{KEY_ENV} / --api-key-stdin"
KEY_PREFIX = "phc_"
MASKED = "phc_****"
UPDATE_FLAGS = ("host", "api_key_stdin", "project_name")
LABEL = "PostHog"


def register_add(isub: argparse._SubParsersAction) -> None:
    add = isub.add_parser(
        "add-posthog", help="add a project's PostHog integration (events sent hourly as `langfuse observation`)",
        epilog=f"The project API key (phc_...) is read from ${KEY_ENV} or, with --api-key-stdin, from one line of "
        "stdin; it is stored encrypted with ENCRYPTION_KEY.")
    add.add_argument("--project", required=True, metavar="P", help="the Langfuse project id")
    add_options(add, for_update=False)
    add.set_defaults(func=cmd_add)


def add_options(p: argparse.ArgumentParser, *, for_update: bool) -> None:
    p.add_argument("--host", required=not for_update, metavar="URL",
                   help="PostHog host, e.g. https://eu.i.posthog.com" + (" (PostHog)" if for_update else ""))
    p.add_argument("--api-key-stdin", action="store_true",
                   help="read the PostHog project API key from the first line of stdin" + (" (PostHog)" if for_update else ""))
    p.add_argument("--project-name", metavar="NAME", help="the Langfuse project's name, sent as "
                   "langfuse_project_name" + (" (PostHog; an empty value clears it)" if for_update else ""))


# ------------------------------------------------------------------------------------------------ handlers


def get(state: StateStore, project: str) -> PostHogIntegration | None:
    return state.get_posthog_integration(project)


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.state.models import PostHogIntegration

    project = require_project(args.project, strict=True)
    state = open_state(settings)
    if state.get_posthog_integration(project) is not None:
        raise ValueError(f"--project: project {project!r} already has a PostHog integration; change it with "
                         f"`exports-pipeline integrations update --project {project} --kind posthog ...`")
    host = _host(args.host)
    key = _read_key(args)
    if key is None:
        raise ValueError(f"{KEY_SOURCES}: the PostHog project API key is required (set {KEY_ENV} or pass "
                         "--api-key-stdin)")
    box = SecretBox(settings.require_encryption_key())
    saved = state.upsert_posthog_integration(PostHogIntegration(
        project_id=project, encrypted_posthog_api_key=box.encrypt(key), posthog_host_name=host,
        project_name=_name(args.project_name)))
    print(f"added PostHog integration for project {project}")
    _print_summary(saved)
    return 0


def update(args: argparse.Namespace, settings: Settings, state: StateStore, existing: PostHogIntegration) -> int:
    from exports_pipeline.crypto import SecretBox

    key = _read_key(args)
    if key is None and args.host is None and args.project_name is None:
        raise ValueError("update: nothing to change; give --host, --project-name or a new key "
                         f"({KEY_SOURCES})")
    changes: dict[str, Any] = {}
    if args.host is not None:
        changes["posthog_host_name"] = _host(args.host)
    if args.project_name is not None:
        changes["project_name"] = args.project_name.strip() or None
    if key is not None:
        changes["encrypted_posthog_api_key"] = SecretBox(settings.require_encryption_key()).encrypt(key)
    changed = [name for name, value in changes.items() if getattr(existing, name) != value]
    if not changed:
        print(f"project {existing.project_id}: nothing changed")
        return 0
    saved = state.upsert_posthog_integration(dataclasses.replace(existing, **changes))
    shown = ["api key (replaced)" if n == "encrypted_posthog_api_key" else n for n in changed]
    print(f"updated PostHog integration for project {existing.project_id}: {', '.join(shown)}")
    _print_summary(saved)
    return 0


def disable(args, settings, state: StateStore, existing: PostHogIntegration) -> int:
    state.disable_posthog_integration(existing.project_id)
    print(f"disabled the PostHog integration of project {existing.project_id} (settings and sync cursor kept; "
          f"`integrations enable --project {existing.project_id} --kind posthog` resumes it)")
    return 0


def enable(args, settings, state: StateStore, existing: PostHogIntegration) -> int:
    state.enable_posthog_integration(existing.project_id)
    note = " and cleared its last error" if existing.last_error else ""
    print(f"enabled the PostHog integration of project {existing.project_id}{note}")
    return 0


def remove(args, settings, state: StateStore, existing: PostHogIntegration) -> int:
    state.delete_posthog_integration(existing.project_id)
    print(f"removed the PostHog integration of project {existing.project_id} (its sync cursor is forgotten; "
          "events already sent stay in PostHog)")
    return 0


def validate(args, settings, state: StateStore, existing: PostHogIntegration) -> int:
    """Ask PostHog whether the stored key is valid at the stored host; nothing is sent that lands as data."""
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.errors import ExportsError
    from exports_pipeline.resources.posthog import PostHogResource

    key = SecretBox(settings.require_encryption_key()).decrypt(existing.encrypted_posthog_api_key)
    if not existing.enabled:
        print(f"note: the PostHog integration of project {existing.project_id} is disabled")
    try:
        detail = PostHogResource(max_attempts=1).client(existing.posthog_host_name, key).check_key()
    except ExportsError as exc:
        print(f"FAIL {exc.code or type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"PASS {_masked_host(existing.posthog_host_name)}")
    print(f"  {detail}; no event was sent")
    return 0


def public_row(i: PostHogIntegration) -> dict[str, Any]:
    """What an operator may see: never the key, nor its ciphertext."""
    from exports_pipeline.commands.integrations import iso

    return {"project": i.project_id, "kind": "posthog", "host": _masked_host(i.posthog_host_name),
            "project_name": i.project_name, "enabled": i.enabled, "export_source": i.export_source,
            "last_sync_at": iso(i.last_sync_at), "last_error": i.last_error, "last_error_at": iso(i.last_error_at),
            "api_key": MASKED}


def rows(state: StateStore) -> list[dict[str, Any]]:
    return [public_row(i) for i in state.list_posthog_integrations()]


TABLE_COLUMNS = ("project", "kind", "host", "project_name", "enabled", "last_sync_at", "last_error", "api_key")


# ------------------------------------------------------------------------------------------------ helpers


def _read_key(args: argparse.Namespace) -> str | None:
    from_env = os.environ.get(KEY_ENV) or None
    if args.api_key_stdin:
        if from_env is not None:
            raise ValueError(f"--api-key-stdin: {KEY_ENV} is set too; give the key one way only")
        key = sys.stdin.readline().strip()
        if not key:
            raise ValueError("--api-key-stdin: stdin gave no key (expected it on the first line)")
    else:
        key = from_env.strip() if from_env else None
    if key is not None and (not key.startswith(KEY_PREFIX) or len(key) <= len(KEY_PREFIX) or not key.isprintable()
                            or " " in key):
        # Never echo it: a personal key (phx_...) pasted by mistake is a secret too.
        raise ValueError(f"{KEY_SOURCES}: a PostHog project API key starts with {KEY_PREFIX} (find it under "
                         "Project settings > Project API key; personal keys phx_... are not accepted)")
    return key


def _host(value: str) -> str:
    from exports_pipeline.urls import mask_url

    host = (value or "").strip().rstrip("/")
    try:
        parts = urlsplit(host)
        _ = parts.port
    except ValueError:
        raise ValueError(f"--host: {mask_url(host)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--host must be an http(s) URL such as https://eu.i.posthog.com, got {mask_url(host)!r}")
    if parts.username or parts.password:
        raise ValueError(f"--host must not carry credentials ({mask_url(host)}); the key is given separately")
    if parts.query or parts.fragment:
        raise ValueError(f"--host must be a plain URL without ?query or #fragment, got {mask_url(host)!r}")
    return host


def _name(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _masked_host(host: str) -> str:
    from exports_pipeline.urls import mask_url

    return mask_url(host)


def _print_summary(i: PostHogIntegration) -> None:
    for name, value in (("host", _masked_host(i.posthog_host_name)), ("project name", i.project_name or "-"),
                        ("api key", f"{MASKED} (stored encrypted)"), ("enabled", "yes" if i.enabled else "no")):
        print(f"  {name:<14} {value}")
