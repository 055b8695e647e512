"""Where objects go: one validated, secret-safe value built from a URL.

Everything about a destination is checked here, before any network call, so a bad setting becomes a
``ConfigError`` naming the field instead of an opaque failure deep inside an upload. The secret key
lives in a ``SecretStr``: ``repr``, ``str``, ``model_dump`` and every error message show asterisks,
because destinations end up in logs, run metadata and ``last_error``.

Keys passed to an object store are full keys (prefix included), so that what is recorded in
``event_log`` is exactly what exists in the bucket; ``key_for(name)`` adds the prefix.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from exports_pipeline.errors import ConfigError
from exports_pipeline.urls import mask_url

# botocore's own client-side check, plus S3's 3-character minimum (legacy us-east-1 names allow 255).
_BUCKET_RE = re.compile(r"^[A-Za-z0-9._-]{3,255}$")
_REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_URL_OPTIONS = frozenset({"scheme", "bucket", "prefix"})


def validate_endpoint_url(url: str) -> str:
    """An S3 endpoint: http(s), a host, no credentials, no query or fragment. Returns it normalized."""
    shown = mask_url(url)
    if "@" in url:
        raise ValueError(
            "endpoint_url must not contain credentials (user:password@); "
            f"use access_key_id / secret_access_key: {shown}"
        )
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ValueError(f"endpoint_url is not a valid URL: {shown}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint_url must use http or https, not {parts.scheme or 'no scheme'}: {shown}")
    if not parts.hostname:
        raise ValueError(f"endpoint_url has no host: {shown}")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError(f"endpoint_url must not have a query or fragment: {shown}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class Destination(BaseModel):
    """An S3 bucket (+ prefix) or a local directory, with how to reach and encrypt it.

    For ``file``, ``bucket`` is the absolute directory. Build one with ``Destination.from_url``;
    invalid input raises ``ConfigError`` whichever way the model is constructed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    scheme: Literal["s3", "file"]
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    force_path_style: bool = False
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    # ------------------------------------------------------------------------------ construction

    @classmethod
    def from_url(cls, url: str, **opts: Any) -> Destination:
        """``s3://bucket/prefix/`` or ``file:///absolute/dir/``; ``opts`` are the other fields."""
        clash = _URL_OPTIONS & opts.keys()
        if clash:
            raise ConfigError(f"{', '.join(sorted(clash))} come(s) from the URL, not from options",
                              field=sorted(clash)[0])
        if not isinstance(url, str) or "://" not in url and not url.startswith("file:"):
            raise ConfigError(f"destination URL must look like s3://bucket/prefix/ or file:///dir/: "
                              f"{mask_url(url)}", field="url")
        scheme = url.split(":", 1)[0].lower()
        if scheme == "s3":
            bucket, prefix = _parse_s3_url(url)
        elif scheme == "file":
            bucket, prefix = _parse_file_url(url), ""
        else:
            raise ConfigError(f"destination URL scheme must be s3 or file, not {scheme!r}: "
                              f"{mask_url(url)}", field="url")
        try:
            return cls(scheme=scheme, bucket=bucket, prefix=prefix, **opts)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (destination {mask_url(url)})", field=exc.field) from None

    # -------------------------------------------------------------------------------- validation

    @field_validator("endpoint_url", "access_key_id", "secret_access_key", "sse", "sse_kms_key_id",
                     mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        """Database rows and environment variables say "not set" with '' as often as with NULL."""
        if isinstance(value, SecretStr):
            return None if value.get_secret_value() == "" else value
        return None if value == "" else value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"prefix must be empty or end with '/': {prefix!r}")
        if prefix.startswith("/"):
            raise ValueError(f"prefix must not start with '/': {prefix!r}")
        return prefix

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, url: str | None) -> str | None:
        return None if url is None else validate_endpoint_url(url)

    @field_validator("region")
    @classmethod
    def _check_region(cls, region: str) -> str:
        if not _REGION_RE.match(region):
            raise ValueError(f"region must be a region name like us-east-1: {region!r}")
        return region

    @model_validator(mode="after")
    def _check_combinations(self) -> Destination:
        if self.scheme == "s3":
            if not _BUCKET_RE.match(self.bucket):
                raise _invalid("bucket", f"bucket name is not valid for S3: {self.bucket!r}")
        else:
            if "\x00" in self.bucket:
                raise _invalid("bucket", "a file destination must not contain a NUL byte")
            if not os.path.isabs(self.bucket):
                raise _invalid("bucket", f"a file destination needs an absolute directory: {self.bucket!r}")
            system = system_directory(self.bucket)
            if system is not None:
                raise _invalid("bucket", f"{self.bucket!r} is the system directory {system!r} or inside it; "
                                         "export into a directory of its own (e.g. /srv/exports/)")
            unused = [name for name in ("endpoint_url", "access_key_id", "secret_access_key", "sse")
                      if getattr(self, name) is not None]
            if unused:
                raise _invalid(unused[0], f"{', '.join(unused)} only apply to s3 destinations")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise _invalid("secret_access_key" if self.secret_access_key is None else "access_key_id",
                           "access_key_id and secret_access_key must be given together (or neither, "
                           "to use the default AWS credential chain)")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise _invalid("sse_kms_key_id", "sse_kms_key_id requires sse='aws:kms'")
        return self

    # ------------------------------------------------------------------------------------- names

    @property
    def url(self) -> str:
        """The destination itself as a URL (no credentials)."""
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return PurePosixPath(self.bucket, self.prefix).as_uri().rstrip("/") + "/"

    def key_for(self, name: str) -> str:
        """The full key of ``name`` under this destination's prefix."""
        return f"{self.prefix}{name}"

    def uri(self, key: str) -> str:
        """``s3://bucket/key`` or ``file:///dir/key`` for a full key."""
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{key}"
        return PurePosixPath(self.bucket, key).as_uri()


# Local directories a file:// destination may never be, nor resolve into through a symlink (an export
# writes and deletes a tree of folders and files there, as root in many containers):
# - the operating system's own trees, with everything under them: a destination there would overwrite or
#   fill system files, or write into kernel interfaces (/proc, /sys, /dev);
# - directories that hold other people's trees: refused themselves, while a directory of its own inside
#   them (/home/alice/exports, /var/lib/exports, /tmp/x, /mnt/data/exports) is fine.
# Linux layout; other systems' trees (macOS's /System, /private/etc) are not listed: the pipeline runs in
# Linux containers.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/sys", "/usr")
SYSTEM_ROOTS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var")


def system_directory(directory: str) -> str | None:
    """The system directory `directory` is, or lies in once symlinks are resolved, else None."""
    candidates = {os.path.normpath(directory), os.path.realpath(directory)}
    for path in candidates:
        if path in SYSTEM_ROOTS:
            return path
        for tree in SYSTEM_TREES:
            if path == tree or path.startswith(tree + "/"):
                return tree
    return None


def _parse_s3_url(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise ConfigError(f"credentials and ports do not belong in an s3:// URL: {mask_url(url)}",
                          field="url")
    if not bucket:
        raise ConfigError(f"s3:// URL has no bucket: {mask_url(url)}", field="bucket")
    return bucket, prefix


def _parse_file_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"file URL is not a valid URL (file:///absolute/dir/): {mask_url(url)}",
                          field="url") from None
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file URL must name an absolute local path (file:///dir/), not a host: "
                          f"{mask_url(url)}", field="url")
    if parts.query or parts.fragment:
        raise ConfigError(f"file URL must not have a query or fragment: {mask_url(url)}", field="url")
    path = unquote(parts.path)
    if "\x00" in path:
        raise ConfigError(f"file URL must not contain a NUL byte (%00): {mask_url(url)}", field="url")
    if not path.startswith("/"):
        raise ConfigError(f"file URL must name an absolute path (file:///dir/): {mask_url(url)}", field="url")
    return os.path.normpath(path)


def _invalid(field: str, message: str) -> PydanticCustomError:
    """A cross-field error that still names its field (pydantic gives model-level errors no loc)."""
    return PydanticCustomError("destination", message.replace("{", "(").replace("}", ")"), {"field": field})


def _config_error(exc: ValidationError) -> ConfigError:
    """A ConfigError naming the field; built from pydantic's messages only, never the input values."""
    problems = []
    first_field = None
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or error.get("ctx", {}).get("field", "")
        first_field = first_field or field
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(message if message.startswith(field) else f"{field}: {message}")
    return ConfigError("invalid destination: " + "; ".join(problems), field=first_field or None)
