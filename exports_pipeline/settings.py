"""Every environment variable the pipeline reads, with its default, validated in one place.

Settings are read once per process (`get_settings()`), and a bad value stops the process at start with
a message naming the variable, instead of failing deep inside a run. Passwords in URLs are masked in
every message (`exports_pipeline.urls.mask_url`).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from exports_pipeline.urls import mask_url

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$")
KEY_FILE_NAME = "encryption_key"

# Every variable this module reads; deployments (docker-compose.yml) must set each for the code server
# and the daemon.
ENV_VARS = (
    "EXPORTS_HOME", "EXPORTS_CLICKHOUSE_URL", "EXPORTS_EVENTS_TABLE", "EXPORTS_DATABASE_URL", "ENCRYPTION_KEY",
    "EXPORTS_SETTLE_MINUTES", "EXPORTS_PARTITIONS_START", "EXPORTS_LATE_ROWS_LOOKBACK_HOURS",
    "EXPORTS_LATE_ROWS_INTERVAL_SECONDS", "EXPORTS_LANGFUSE_URL",
    "EXPORTS_BATCH_EXPORT_ROW_LIMIT", "EXPORTS_BATCH_EXPORT_DESTINATION", "EXPORTS_BATCH_EXPORT_ENDPOINT",
    "EXPORTS_BATCH_EXPORT_REGION", "EXPORTS_BATCH_EXPORT_ACCESS_KEY_ID", "EXPORTS_BATCH_EXPORT_SECRET_ACCESS_KEY",
    "EXPORTS_BATCH_EXPORT_FORCE_PATH_STYLE", "EXPORTS_BATCH_EXPORT_SSE", "EXPORTS_BATCH_EXPORT_SSE_KMS_KEY_ID",
    "EXPORTS_BATCH_EXPORT_EXTERNAL_ENDPOINT", "EXPORTS_BATCH_EXPORT_LINK_HOURS",
    "EXPORTS_BATCH_EXPORT_RETENTION_DAYS", "EXPORTS_SMTP_URL", "EXPORTS_EMAIL_FROM",
)
# Langfuse's BATCH_EXPORT_ROW_LIMIT default; a request's --limit may only lower it.
DEFAULT_BATCH_ROW_LIMIT = 1_500_000
MAX_LINK_HOURS = 7 * 24  # SigV4 presigned URLs live at most 7 days



class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


class BatchExportSettings(BaseModel):
    """Where batch export files go and how long their links and files live.

    One destination for the whole deployment (Langfuse's `LANGFUSE_S3_BATCH_EXPORT_*`), unlike object
    storage where each project brings its own bucket. `external_endpoint` is the host links are signed for
    (a MinIO behind a proxy is reached as `minio:9000` by the pipeline and as `files.example.com` by people).
    """

    model_config = ConfigDict(frozen=True)

    row_limit: int = DEFAULT_BATCH_ROW_LIMIT
    destination: str
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    force_path_style: bool = False
    sse: str | None = None
    sse_kms_key_id: str | None = None
    external_endpoint: str | None = None
    link_hours: int = 24
    retention_days: int = 30
    smtp_url: SecretStr | None = None
    email_from: str | None = None

    def __repr__(self) -> str:  # the secret key and the SMTP password never show
        return (f"BatchExportSettings(destination={self.destination!r}, endpoint={self.endpoint!r}, "
                f"external_endpoint={self.external_endpoint!r}, row_limit={self.row_limit}, "
                f"link_hours={self.link_hours}, retention_days={self.retention_days}, "
                f"smtp_url={self.masked_smtp_url!r}, email_from={self.email_from!r})")

    __str__ = __repr__

    @property
    def masked_smtp_url(self) -> str | None:
        return mask_url(self.smtp_url.get_secret_value()) if self.smtp_url else None

    def _opts(self, endpoint: str | None) -> dict:
        if self.destination.startswith("file:"):
            return {}
        return {"endpoint_url": endpoint, "region": self.region, "force_path_style": self.force_path_style,
                "access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key,
                "sse": self.sse, "sse_kms_key_id": self.sse_kms_key_id}

    def store_destination(self):
        """The `Destination` the pipeline writes to (secret inside, masked in every rendering)."""
        from exports_pipeline.resources.object_store.destination import Destination

        return Destination.from_url(self.destination, **self._opts(self.endpoint))

    def link_destination(self):
        """The same bucket as seen from outside: links are signed for `external_endpoint` when set."""
        from exports_pipeline.resources.object_store.destination import Destination

        return Destination.from_url(self.destination, **self._opts(self.external_endpoint or self.endpoint))

    @classmethod
    def from_env(cls, env: dict[str, str], home: Path) -> BatchExportSettings:
        from exports_pipeline.errors import ConfigError

        get = lambda name: (env.get(f"EXPORTS_BATCH_EXPORT_{name}") or "").strip() or None  # noqa: E731
        limit = _positive_int(env, "EXPORTS_BATCH_EXPORT_ROW_LIMIT", str(DEFAULT_BATCH_ROW_LIMIT), "rows")
        link_hours = _positive_int(env, "EXPORTS_BATCH_EXPORT_LINK_HOURS", "24", "hours")
        if link_hours > MAX_LINK_HOURS:
            raise SettingsError(f"EXPORTS_BATCH_EXPORT_LINK_HOURS={link_hours} is more than {MAX_LINK_HOURS} "
                                "(presigned links live at most 7 days)")
        retention = env.get("EXPORTS_BATCH_EXPORT_RETENTION_DAYS", "30")
        if not re.fullmatch(r"[0-9]+", retention):
            raise SettingsError(f"EXPORTS_BATCH_EXPORT_RETENTION_DAYS={retention!r} must be a whole number of "
                                "days (0 keeps files forever)")
        path_style = (get("FORCE_PATH_STYLE") or "false").lower()
        if path_style not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"EXPORTS_BATCH_EXPORT_FORCE_PATH_STYLE={path_style!r} must be true or false")
        sse = get("SSE")
        if sse not in (None, "AES256", "aws:kms"):
            raise SettingsError(f"EXPORTS_BATCH_EXPORT_SSE={sse!r} must be AES256 or aws:kms")
        destination = get("DESTINATION") or (home / "batch-exports").as_uri() + "/"
        smtp = (env.get("EXPORTS_SMTP_URL") or "").strip() or None
        email_from = (env.get("EXPORTS_EMAIL_FROM") or "").strip() or None
        _check_mail(smtp, email_from)
        secret = get("SECRET_ACCESS_KEY")
        built = cls(
            row_limit=limit, destination=destination, endpoint=get("ENDPOINT"), region=get("REGION") or "us-east-1",
            access_key_id=get("ACCESS_KEY_ID"), secret_access_key=SecretStr(secret) if secret else None,
            force_path_style=path_style in ("true", "1", "yes"), sse=sse, sse_kms_key_id=get("SSE_KMS_KEY_ID"),
            external_endpoint=get("EXTERNAL_ENDPOINT"), link_hours=link_hours, retention_days=int(retention),
            smtp_url=SecretStr(smtp) if smtp else None, email_from=email_from,
        )
        for name, make in (("EXPORTS_BATCH_EXPORT_DESTINATION", built.store_destination),
                           ("EXPORTS_BATCH_EXPORT_EXTERNAL_ENDPOINT", built.link_destination)):
            try:
                make()
            except ConfigError as exc:
                field = (exc.field or "").upper()
                named = f"EXPORTS_BATCH_EXPORT_{field}" if field and field not in ("URL", "BUCKET", "PREFIX") else name
                if field == "ENDPOINT_URL":
                    named = name if name.endswith("EXTERNAL_ENDPOINT") else "EXPORTS_BATCH_EXPORT_ENDPOINT"
                raise SettingsError(f"{named}: {exc}") from None
        return built


def _check_mail(smtp_url: str | None, email_from: str | None) -> None:
    """Both or neither, each valid: the mailer's own rules (`resources/mailer.py`), named by variable."""
    from exports_pipeline.errors import ConfigError
    from exports_pipeline.resources.mailer import MailerResource

    try:
        MailerResource(smtp_url=smtp_url or "", email_from=email_from or "").validate_config()
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None


class Settings(BaseModel):
    """The validated process settings. Build with `Settings.from_env()`."""

    model_config = ConfigDict(frozen=True)

    home: Path
    clickhouse_url: str
    events_table: str
    database_url: str
    encryption_key: str | None
    # Minutes to wait past a window's end before a schedule exports it (late rows settle).
    settle_minutes: int
    # First day of the time partitions: history before it is not offered as partitions (the UI and
    # Dagster's guidance cap a partitioned asset near 100k keys; hourly x projects grows fast).
    partitions_start: str
    # How far back the late-rows sensor compares finished windows with their manifests (windows that
    # ended within this many hours), and how often it looks.
    late_rows_lookback_hours: int
    late_rows_interval_seconds: int
    # Langfuse's base URL (its NEXTAUTH_URL): analytics events link back to traces and users with it;
    # without it they carry no `langfuse_url` / `langfuse_user_url`.
    langfuse_url: str | None = None
    # One-off filtered exports (`exports-pipeline batch-export`, job `batch_export`).
    batch_export: BatchExportSettings | None = None

    def __repr__(self) -> str:  # never show the key, nor a password in a URL
        return (
            f"Settings(home={str(self.home)!r}, clickhouse_url={mask_url(self.clickhouse_url)!r}, "
            f"events_table={self.events_table!r}, database_url={mask_url(self.database_url)!r}, "
            f"encryption_key={'set' if self.encryption_key else 'unset'}, settle_minutes={self.settle_minutes}, "
            f"partitions_start={self.partitions_start!r}, late_rows_lookback_hours={self.late_rows_lookback_hours}, "
            f"late_rows_interval_seconds={self.late_rows_interval_seconds}, "
            f"langfuse_url={mask_url(self.langfuse_url) if self.langfuse_url else None!r}, "
            f"batch_export={self.batch_export!r})"
        )

    __str__ = __repr__

    @property
    def chdb_path(self) -> str | None:
        return chdb_path_of(self.clickhouse_url)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("EXPORTS_HOME") or ".exports").expanduser().resolve()

        ch_url = env.get("EXPORTS_CLICKHOUSE_URL") or f"chdb://{home / 'chdb'}"
        _check_clickhouse_url(ch_url)

        table = env.get("EXPORTS_EVENTS_TABLE") or "events_full"
        if not _TABLE.match(table):
            raise SettingsError(
                f"EXPORTS_EVENTS_TABLE={table!r} is not a table name (letters, digits, _; optionally database.table)"
            )

        default_db_url = default_database_url(home)
        db_url = env.get("EXPORTS_DATABASE_URL") or default_db_url
        _check_database_url(db_url, is_default=db_url == default_db_url)

        key = env.get("ENCRYPTION_KEY") or _read_key_file(home)
        if key is not None and not _HEX64.match(key):
            raise SettingsError("ENCRYPTION_KEY must be 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`")

        settle = env.get("EXPORTS_SETTLE_MINUTES", "15")
        if not settle.isdigit():
            raise SettingsError(f"EXPORTS_SETTLE_MINUTES={settle!r} must be a whole number of minutes")

        start = env.get("EXPORTS_PARTITIONS_START", "2025-01-01")
        if not re.match(r"^\d{4}-\d{2}-\d{2}$", start):
            raise SettingsError(f"EXPORTS_PARTITIONS_START={start!r} must be a date in YYYY-MM-DD form")

        lookback = _positive_int(env, "EXPORTS_LATE_ROWS_LOOKBACK_HOURS", "72", "hours")
        interval = _positive_int(env, "EXPORTS_LATE_ROWS_INTERVAL_SECONDS", "900", "seconds")

        langfuse_url = (env.get("EXPORTS_LANGFUSE_URL") or "").strip() or None
        if langfuse_url is not None:
            parts = _split_server_url("EXPORTS_LANGFUSE_URL", langfuse_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(f"EXPORTS_LANGFUSE_URL={mask_url(langfuse_url)!r} must be an http(s) URL, "
                                    "e.g. https://cloud.langfuse.com")

        return cls(
            home=home, clickhouse_url=ch_url, events_table=table, database_url=db_url,
            encryption_key=key, settle_minutes=int(settle), partitions_start=start,
            late_rows_lookback_hours=lookback, late_rows_interval_seconds=interval, langfuse_url=langfuse_url,
            batch_export=BatchExportSettings.from_env(env, home),
        )

    def require_encryption_key(self) -> str:
        if not self.encryption_key:
            raise SettingsError(
                "ENCRYPTION_KEY is not set: set it to 64 hex characters (`openssl rand -hex 32`); "
                "`exports-pipeline demo` stores one under EXPORTS_HOME for local use"
            )
        return self.encryption_key


def default_database_url(home: Path) -> str:
    """The state database when EXPORTS_DATABASE_URL is unset: a SQLite file under EXPORTS_HOME."""
    return f"sqlite:///{home / 'state.db'}"


def chdb_path_of(url: str) -> str | None:
    """The data directory of a `chdb://` URL, else None."""
    if not url.startswith("chdb://"):
        return None
    return url[len("chdb://"):] or None


def _positive_int(env: dict[str, str], name: str, default: str, unit: str) -> int:
    value = env.get(name, default)
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise SettingsError(f"{name}={value!r} must be a whole number of {unit}, at least 1")
    return int(value)


# Never quote urlsplit's own error: it reads an unencoded password as the port and prints it.
_ENCODE_HINT = "characters / # ? @ : in the user name or password must be percent-encoded (/ as %2F, # as %23)"


def _check_clickhouse_url(url: str) -> None:
    if url.startswith("chdb://"):
        path = url[len("chdb://"):]
        if not path.startswith("/"):
            raise SettingsError(f"EXPORTS_CLICKHOUSE_URL={mask_url(url)!r}: a chdb:// URL needs an absolute directory, "
                                "e.g. chdb:///data/chdb")
        return
    parts = _split_server_url("EXPORTS_CLICKHOUSE_URL", url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"EXPORTS_CLICKHOUSE_URL={mask_url(url)!r} must be chdb:///dir or http(s)://user:password@host:port/database"
        )


def _split_server_url(name: str, url: str):
    """`urlsplit(url)`, or a SettingsError that says how to fix the URL without quoting any of its parts."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise SettingsError(f"{name}={mask_url(url)!r} is not a valid URL (bad host or port; {_ENCODE_HINT})") from None
    # An '@' after the host part is an unencoded password cut short by a '/', '?' or '#' that happened to
    # leave a numeric "port": the client would connect to the user name as a host.
    if "@" in parts.path + parts.query + parts.fragment:
        raise SettingsError(f"{name}={mask_url(url)!r} has an '@' after the host: {_ENCODE_HINT}")
    return parts


def _check_database_url(url: str, *, is_default: bool) -> None:
    if url.startswith("sqlite:///"):
        if not is_default:
            _check_sqlite_directory(url)
        return
    if url.startswith("postgresql+psycopg2://"):
        _split_server_url("EXPORTS_DATABASE_URL", url)
        return
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        raise SettingsError(
            f"EXPORTS_DATABASE_URL={mask_url(url)!r}: use the postgresql+psycopg2:// scheme (the driver this project pins)"
        )
    raise SettingsError(f"EXPORTS_DATABASE_URL={mask_url(url)!r} must be sqlite:///path or postgresql+psycopg2://...")


def _check_sqlite_directory(url: str) -> None:
    """A SQLite file the operator placed must go into a directory that exists.

    Only the default (`EXPORTS_HOME/state.db`) gets its directory created (`commands.open_state`): a typo
    in an explicit path would otherwise create a stray tree and a fresh, empty state database there, and
    every integration would seem to have vanished.
    """
    path = sqlite_path_of(url)
    if path is None:
        return
    if "\x00" in path:
        raise SettingsError(f"EXPORTS_DATABASE_URL={mask_url(url)!r}: the path must not contain a NUL byte (%00)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SettingsError(f"EXPORTS_DATABASE_URL={mask_url(url)!r}: directory {directory!r} does not exist "
                            "(create it first; only the default state database under EXPORTS_HOME gets its "
                            "directory created)")


def sqlite_path_of(url: str) -> str | None:
    """The file of a `sqlite:///path` URL (query options dropped, percent-escapes decoded as SQLAlchemy
    does), else None (also for in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = unquote(url[len("sqlite:///"):].split("?", 1)[0])
    return path if path and path != ":memory:" else None


def _read_key_file(home: Path) -> str | None:
    path = home / KEY_FILE_NAME
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def store_generated_key(home: Path, key: str) -> Path:
    """Write the demo's own key under EXPORTS_HOME (0600) so later processes find it."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / KEY_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return path


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
