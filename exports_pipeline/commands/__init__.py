"""Operator subcommands of `exports-pipeline` that manage integrations and what they exported.

Each module has a `register(sub)` that `cli.build_parser()` calls; handlers take `(args, settings)` and
return the exit code. Bad input raises `ValueError` with a message that starts with the flag it is about
(`cli.main` prints it as one line and exits 2). Heavy imports (Dagster, boto3, SQLAlchemy) happen inside
handlers so `exports-pipeline --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.settings import Settings
    from exports_pipeline.state.store import StateStore


def open_state(settings: Settings) -> StateStore:
    """The state database of these settings (migrated on first use). The default SQLite file's directory,
    EXPORTS_HOME, is created if missing, so the first command on a fresh machine works; an explicit
    EXPORTS_DATABASE_URL into a missing directory was refused by the settings loader."""
    from exports_pipeline.settings import default_database_url
    from exports_pipeline.state.store import StateStore

    if settings.database_url == default_database_url(settings.home):
        settings.home.mkdir(parents=True, exist_ok=True)
    return StateStore(database_url=settings.database_url)


def optional_box(settings: Settings) -> SecretBox | None:
    """A SecretBox when ENCRYPTION_KEY is configured, else None (only secrets need it)."""
    from exports_pipeline.crypto import SecretBox

    return SecretBox(settings.encryption_key) if settings.encryption_key else None


def require_project(value: str | None, *, strict: bool) -> str:
    """The --project value. `strict` (new integrations) also requires a usable Dagster partition key;
    commands on existing rows only need it non-empty, so a legacy id can still be removed."""
    if value is None or not value.strip():
        raise ValueError("--project must be a non-empty project id")
    if strict:
        from exports_pipeline.engine.partitions import check_project_id

        try:
            check_project_id(value)
        except ValueError as exc:
            raise ValueError(f"--project: {exc}") from None
    return value
