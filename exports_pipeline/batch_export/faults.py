"""What a FAILED batch export tells the person who asked: what went wrong and what to do about it.

Langfuse stores "An internal error occurred" for anything that is not one of its own errors (§2.2);
here every failure is sorted into a class with a sentence of advice. The export bucket is the
deployment's, not the requester's, so storage problems say what the operator must fix and name the
setting. Messages are built from our own words plus the (already masked) error text, and scrubbed of
the secrets this process knows once more before they are stored or mailed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exports_pipeline.errors import (
    ConfigError,
    CustomerFault,
    DeploymentFault,
    ExportsError,
    ObjectTooLarge,
    TransientFault,
)
from exports_pipeline.resources.clickhouse import ClickHouseError

# ClickHouse error codes (Code: N.) and names, whichever part of a long message survived.
_MEMORY = re.compile(r"Code: 241\.|MEMORY_LIMIT_EXCEEDED|memory limit exceeded|Memory limit \(", re.I)
_MISSING_COLUMN = re.compile(r"Code: (47|16)\.|UNKNOWN_IDENTIFIER|Unknown (expression )?identifier|"
                             r"Missing columns?:|There's no column|NO_SUCH_COLUMN", re.I)
_MISSING_TABLE = re.compile(r"Code: (60|81)\.|UNKNOWN_TABLE|UNKNOWN_DATABASE|Table .* does(n't| not) exist", re.I)
_NOISE = re.compile(r"\.? (in scope|While processing|\(version) .*$", re.S | re.I)
_TIMEOUT = re.compile(r"Code: (159|209|210)\.|TIMEOUT_EXCEEDED|timed out|cannot connect|Timeout|Connection refused|Connection reset|"
                      r"RemoteDisconnected|NETWORK_ERROR|SOCKET_TIMEOUT|TOO_MANY_SIMULTANEOUS_QUERIES", re.I)
_COLUMN_NAME = re.compile(r"(?:Missing columns?: |identifier |column )['`]?(?:e\.)?([A-Za-z_][A-Za-z0-9_]*)", re.I)


@dataclass(frozen=True)
class Diagnosis:
    message: str  # for batch_exports.log, the run and the failure mail
    transient: bool  # worth another attempt (the step's RetryPolicy)


def diagnose(exc: BaseException, *, destination: str, table: str, secrets: tuple[str, ...] = ()) -> Diagnosis:
    """The stored message and whether retrying may help, for any exception a run can end with."""
    text = _first_line(exc)
    transient = False
    if isinstance(exc, CustomerFault) or (isinstance(exc, ExportsError) and _storage_code(exc)):
        message = _storage_advice(exc, destination, text)
    elif isinstance(exc, TransientFault):
        transient = True
        message = (f"the export bucket {destination} did not answer reliably ({text}); it was retried with "
                   "backoff and gave up. Request the export again later; if it keeps failing, the operator "
                   "should check the storage service.")
    elif isinstance(exc, ObjectTooLarge):
        message = (f"the file would be larger than one object can hold ({text}). Narrow the filter, export "
                   "fewer columns or lower --limit.")
    elif isinstance(exc, DeploymentFault) and not isinstance(exc, ClickHouseError):
        message = f"{text} The operator must fix this deployment; requesting the export again will not help."
    elif isinstance(exc, ConfigError):
        message = (f"the stored request is no longer valid: {text}. Request the export again with a valid "
                   "filter.")
    elif isinstance(exc, ClickHouseError):
        message, transient = _clickhouse_advice(_NOISE.sub("", text), table)
    else:
        message = (f"unexpected error {type(exc).__name__}: {text}. This is a bug in exports_pipeline, not "
                   "your request: report it with the export id; requesting the export again may work.")
    return Diagnosis(scrub(message, secrets), transient)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _storage_code(exc: ExportsError) -> str | None:
    return exc.code if exc.code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
                                    "SignatureDoesNotMatch", "NoSuchDirectory", "EACCES", "EROFS") else None


def _storage_advice(exc: ExportsError, destination: str, text: str) -> str:
    code = exc.code or ""
    if code in ("NoSuchBucket", "NoSuchDirectory", "ENOENT"):
        what = f"the export bucket {destination} does not exist ({text})"
        todo = "The operator must create it or correct EXPORTS_BATCH_EXPORT_DESTINATION"
    elif code in ("AccessDenied", "Forbidden", "403", "AllAccessDisabled", "EACCES", "EPERM", "EROFS") or code.startswith("KMS."):
        what = f"the export bucket {destination} refused to store the file ({text})"
        todo = ("The operator must allow PutObject, multipart uploads and GetObject for "
                "EXPORTS_BATCH_EXPORT_ACCESS_KEY_ID on it (and the KMS key, with EXPORTS_BATCH_EXPORT_SSE=aws:kms)")
    elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "401"):
        what = f"the export bucket {destination} did not accept this deployment's credentials ({text})"
        todo = ("The operator must correct EXPORTS_BATCH_EXPORT_ACCESS_KEY_ID and "
                "EXPORTS_BATCH_EXPORT_SECRET_ACCESS_KEY")
    else:
        what = f"storing the file in {destination} failed ({text})"
        todo = ("The operator must check EXPORTS_BATCH_EXPORT_DESTINATION, _ENDPOINT and _REGION")
    return f"{what}. {todo}, then request the export again. No file was kept."


def _clickhouse_advice(text: str, table: str) -> tuple[str, bool]:
    if _MEMORY.search(text):
        return (f"ClickHouse ran out of memory producing the file (its memory limit): {text}. Narrow the "
                "filter or the time range, export fewer columns (input/output are the large ones), order by "
                "startTime (the cheapest order) or lower --limit; the operator can raise the server's "
                "max_memory_usage.", False)
    if _MISSING_COLUMN.search(text):
        found = _COLUMN_NAME.search(text)
        column = f" {found.group(1)!r}" if found else ""
        return (f"the events table {table} has no column{column} that this export needs ({text}). Its "
                "Langfuse ClickHouse migrations are older than this pipeline expects: remove the condition "
                "or column that needs it and request again, or ask the operator to run Langfuse's "
                "migrations.", False)
    if _MISSING_TABLE.search(text):
        return (f"the events table {table} does not exist ({text}). The operator must correct "
                "EXPORTS_EVENTS_TABLE.", False)
    if _TIMEOUT.search(text):
        return (f"ClickHouse was unreachable or too slow ({text}); retried and gave up. Request the export "
                "again later.", True)
    return (f"ClickHouse refused the export query: {text}. Report it with the export id.", False)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:600]
