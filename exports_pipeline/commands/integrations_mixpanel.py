"""`exports-pipeline integrations add-mixpanel` and the Mixpanel kind's handlers for the generic commands.

Credentials never travel on the command line (shell history, `ps`): a project token comes from
`EXPORTS_MIXPANEL_PROJECT_TOKEN` or the first line of stdin (`--token-stdin`); a service account's secret
from `EXPORTS_MIXPANEL_SECRET` or stdin (`--secret-stdin`), with `--service-account-username U` and
`--mixpanel-project-id N`. Both are encrypted with `ENCRYPTION_KEY` before they are stored and never printed.

`list`, `update`, `disable`, `enable`, `remove` and `validate` are generic over integration kinds
(`commands/integrations.py`, `--kind mixpanel`); the handlers below are what this kind contributes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Any

from exports_pipeline.commands import open_state, optional_box, require_project

if TYPE_CHECKING:
    from exports_pipeline.settings import Settings
    from exports_pipeline.state.models import MixpanelIntegration

TOKEN_ENV = "EXPORTS_MIXPANEL_PROJECT_TOKEN"
SECRET_ENV = "EXPORTS_MIXPANEL_SECRET"
REGIONS = ("api", "api-eu", "api-in")
MASKED = "****"


def register_add(isub: argparse._SubParsersAction) -> None:
    add = isub.add_parser(
        "add-mixpanel", help="add a project's Mixpanel sync (a project token, or a service account)",
        epilog=f"The project token is read from ${TOKEN_ENV} or, with --token-stdin, from one line of stdin; a "
        f"service account's secret from ${SECRET_ENV} or --secret-stdin. Both are stored encrypted with "
        "ENCRYPTION_KEY.")
    add.add_argument("--project", required=True, metavar="P", help="the Langfuse project id")
    add.add_argument("--region", required=True, metavar="|".join(REGIONS),
                     help="Mixpanel data residency: api (US), api-eu (EU), api-in (India)")
    add.add_argument("--endpoint", metavar="URL", help="base URL replacing https://{region}.mixpanel.com "
                     "(a proxy; /import?strict=1 is appended)")
    add_options(add, for_update=False)
    add.set_defaults(func=cmd_add_mixpanel)


def add_options(p: argparse.ArgumentParser, *, for_update: bool) -> None:
    """The credential options (`update` shares --region and --endpoint with the object-storage kind)."""
    suffix = " (Mixpanel)" if for_update else ""
    p.add_argument("--token-stdin", action="store_true", help="read the project token from the first line of stdin"
                   + suffix)
    p.add_argument("--service-account-username", metavar="U", help="an Owner or Admin service account" + suffix)
    p.add_argument("--mixpanel-project-id", metavar="N", help="the numeric Mixpanel project id (service account)")
    p.add_argument("--secret-stdin", action="store_true",
                   help="read the service account's secret from the first line of stdin" + suffix)


UPDATE_FLAGS = ("region", "endpoint", "token_stdin", "service_account_username", "mixpanel_project_id",
                "secret_stdin")


def cmd_add_mixpanel(args: argparse.Namespace, settings: Settings) -> int:
    project = require_project(args.project, strict=True)
    state = open_state(settings)
    if state.get_mixpanel_integration(project) is not None:
        raise ValueError(f"--project: project {project!r} already has a Mixpanel integration")
    integration = build(args, settings)
    saved = state.upsert_mixpanel_integration(integration)
    print(f"added Mixpanel integration for project {project}")
    for name, value in summary(saved):
        print(f"  {name:<12} {value}")
    from exports_pipeline.commands.integrations import _register
    from exports_pipeline.sinks.mixpanel.plugin import MIXPANEL

    print(_register(MIXPANEL, "daily", project))
    return 0


def build(args: argparse.Namespace, settings: Settings) -> MixpanelIntegration:
    """The integration these options describe, validated, its secret encrypted."""
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.state.models import MixpanelIntegration

    region = (args.region or "").strip()
    if region not in REGIONS:
        raise ValueError(f"--region must be one of {', '.join(REGIONS)}, got {args.region!r}")
    endpoint = args.endpoint.strip() if args.endpoint else None
    if endpoint is not None and not (endpoint.startswith(("http://", "https://")) and len(endpoint) > 8):
        from exports_pipeline.urls import mask_url

        raise ValueError(f"--endpoint must be an http(s) URL, got {mask_url(endpoint)}")
    account = args.service_account_username is not None or args.mixpanel_project_id is not None or args.secret_stdin
    if account:
        if args.token_stdin:
            raise ValueError("--token-stdin: give a project token or a service account, not both")
        user = (args.service_account_username or "").strip()
        if not user:
            raise ValueError("--service-account-username is required with a service account")
        pid = (args.mixpanel_project_id or "").strip()
        if not (pid.isascii() and pid.isdigit()):
            raise ValueError(f"--mixpanel-project-id must be Mixpanel's numeric project id, got {args.mixpanel_project_id!r}")
        secret = _read(SECRET_ENV, "--secret-stdin", args.secret_stdin)
        if secret is None:
            raise ValueError(f"the service account's secret is missing: set ${SECRET_ENV} or pass --secret-stdin")
        box = SecretBox(settings.require_encryption_key())
        fields: dict[str, Any] = dict(mixpanel_service_account_username=user, mixpanel_project_id=pid,
                                      encrypted_mixpanel_service_account_secret=box.encrypt(secret))
    else:
        token = _read(TOKEN_ENV, "--token-stdin", args.token_stdin)
        if token is None:
            raise ValueError(f"the project token is missing: set ${TOKEN_ENV}, pass --token-stdin, or give a "
                             "service account (--service-account-username, --mixpanel-project-id)")
        fields = dict(encrypted_mixpanel_project_token=SecretBox(settings.require_encryption_key()).encrypt(token))
    return MixpanelIntegration(args.project, mixpanel_region=region, endpoint=endpoint, **fields)


def _read(env: str, flag: str, from_stdin: bool) -> str | None:
    from_env = os.environ.get(env) or None
    if not from_stdin:
        return from_env.strip() if from_env else None
    if from_env is not None:
        raise ValueError(f"{flag}: ${env} is set too; give the secret one way only")
    line = sys.stdin.readline().strip()
    if not line:
        raise ValueError(f"{flag}: stdin gave no secret (expected it on the first line)")
    return line


# ------------------------------------------------------------------------------- the kind, for generic commands


def public_row(i: MixpanelIntegration) -> dict[str, Any]:
    """Everything an operator may see: never a secret nor its ciphertext."""
    from exports_pipeline.urls import mask_url

    return {
        "project": i.project_id, "kind": "mixpanel", "region": i.mixpanel_region,
        "endpoint": mask_url(i.endpoint) if i.endpoint else None,
        "auth": "service account" if i.uses_service_account else "project token",
        "service_account_username": i.mixpanel_service_account_username, "mixpanel_project_id": i.mixpanel_project_id,
        "secret": MASKED, "enabled": i.enabled, "last_sync_at": i.last_sync_at.isoformat() if i.last_sync_at else None,
        "last_error": i.last_error,
    }


def summary(i: MixpanelIntegration) -> list[tuple[str, str]]:
    from exports_pipeline.resources.mixpanel import import_url, region_base_url
    from exports_pipeline.urls import mask_url

    url = import_url(i.endpoint or region_base_url(i.mixpanel_region), i.mixpanel_project_id)
    auth = (f"service account {i.mixpanel_service_account_username} (secret {MASKED}, stored encrypted)"
            if i.uses_service_account else f"project token {MASKED} (stored encrypted)")
    return [("region", i.mixpanel_region), ("sends to", mask_url(url)), ("credentials", auth),
            ("enabled", "yes" if i.enabled else "no")]


def validate_project(project: str, settings: Settings) -> int:
    """`integrations validate` for a Mixpanel integration: PASS, or FAIL and the exact cause (exit 1)."""
    from exports_pipeline.resources.mixpanel import MixpanelResource
    from exports_pipeline.sinks.mixpanel.validate import validate

    integration = open_state(settings).get_mixpanel_integration(project)
    if integration is None:
        raise ValueError(f"--project: project {project!r} has no Mixpanel integration")
    if not integration.enabled:
        print(f"note: the Mixpanel integration of project {project} is disabled")
    with MixpanelResource().client(integration, optional_box(settings)) as client:
        result = validate(client, project)
    if result.ok:
        print(f"PASS {result.message}")
        return 0
    print(f"FAIL {result.message}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------- handlers of the generic commands


def update(args: argparse.Namespace, settings: Settings, state, existing: MixpanelIntegration) -> int:
    """--region, --endpoint ('' clears it) and new credentials (either kind) from the environment or stdin."""
    token_given = args.token_stdin or os.environ.get(TOKEN_ENV)
    account_given = (args.service_account_username is not None or args.mixpanel_project_id is not None
                     or args.secret_stdin or os.environ.get(SECRET_ENV))
    if args.region is None and args.endpoint is None and not token_given and not account_given:
        raise ValueError("update: nothing to change; give --region, --endpoint or new credentials")
    endpoint = existing.endpoint if args.endpoint is None else (args.endpoint.strip() or None)
    args.region = args.region if args.region is not None else existing.mixpanel_region
    args.endpoint = endpoint
    if token_given or account_given:
        if account_given and not token_given and existing.uses_service_account:  # keep what is not given
            args.service_account_username = args.service_account_username or existing.mixpanel_service_account_username
            args.mixpanel_project_id = args.mixpanel_project_id or existing.mixpanel_project_id
        new = build(args, settings)
    else:
        new = dataclasses.replace(existing, mixpanel_region=args.region, endpoint=endpoint)
    new = dataclasses.replace(new, enabled=existing.enabled, export_source=existing.export_source)
    saved = state.upsert_mixpanel_integration(new)
    print(f"updated Mixpanel integration for project {existing.project_id}")
    for name, value in summary(saved):
        print(f"  {name:<12} {value}")
    return 0


def disable(args, settings, state, existing: MixpanelIntegration) -> int:
    state.disable_mixpanel_integration(existing.project_id)
    print(f"disabled the Mixpanel integration of project {existing.project_id} (settings and sync cursor kept; "
          f"`integrations enable --project {existing.project_id} --kind mixpanel` resumes it)")
    return 0


def enable(args, settings, state, existing: MixpanelIntegration) -> int:
    state.enable_mixpanel_integration(existing.project_id)
    note = " and cleared its last error" if existing.last_error else ""
    print(f"enabled the Mixpanel integration of project {existing.project_id}{note}")
    return 0


def remove(args, settings, state, existing: MixpanelIntegration) -> int:
    state.delete_mixpanel_integration(existing.project_id)
    print(f"removed the Mixpanel integration of project {existing.project_id} (its sync cursor is forgotten; "
          "events already sent stay in Mixpanel)")
    return 0


def validate(args, settings, state, existing: MixpanelIntegration) -> int:
    return validate_project(existing.project_id, settings)


def get(state, project: str) -> MixpanelIntegration | None:
    return state.get_mixpanel_integration(project)


def rows(state) -> list[dict[str, Any]]:
    return [public_row(i) for i in state.list_mixpanel_integrations()]


LABEL = "Mixpanel"
TABLE_COLUMNS = ("project", "kind", "region", "endpoint", "auth", "enabled", "last_sync_at", "last_error", "secret")
