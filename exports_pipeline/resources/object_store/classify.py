"""Who is at fault when an object store call fails.

The lists follow Langfuse's customer-fault classification (langfuse-exports §3.7) and PostHog's
non-retryable S3 errors (anchors §A6): credentials, permissions and bucket problems are the customer's
and are never retried; throttling, timeouts, 5xx and dropped connections are retried. Anything else is
left unclassified (``None``): usually our own bug, which should fail loudly rather than be retried or
blamed on the customer.

A connection that cannot be established at all (DNS, refused, TLS) is ambiguous: a blip, or an
endpoint/region the customer typed wrong. The caller says whether the endpoint ever answered
(``in_progress``); the stores retry such errors first and only call them the customer's on the last
attempt of a store that never reached its endpoint.
"""

from __future__ import annotations

import errno

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from exports_pipeline.errors import CustomerFault, ExportsError, TransientFault

CUSTOMER_CODES = frozenset({
    # credentials and permissions
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AllAccessDisabled", "AccountProblem",
    "AuthorizationHeaderMalformed", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
    "InvalidSecurity", "Forbidden", "Unauthorized", "403", "401",
    # bucket and region
    "NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "301", "IllegalLocationConstraintException",
    # an S3-compatible store without an API we need
    "NotImplemented",
})
TRANSIENT_CODES = frozenset({
    "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottled", "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException",
    "ServiceUnavailable", "InternalError", "OperationAborted", "BadDigest", "IncompleteBody",
    "RequestTimeoutException", "PriorRequestNotComplete",
})
_MESSAGE_LIMIT = 1000  # what fits last_error (Langfuse keeps ≤ 1000 characters too)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore error (``AccessDenied``), else the exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or _status(exc) or "Unknown")
    return type(exc).__name__


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = error.get("Message") or ""
        status = _status(exc)
        text = f"{error_code(exc)}: {message}".rstrip(": ")
        return f"{text} (HTTP {status})" if status else text
    return f"{type(exc).__name__}: {exc}"


def _message(exc: BaseException, operation: str | None, target: str | None) -> str:
    where = " ".join(part for part in (operation, target) if part)
    text = f"{where} failed: {_describe(exc)}" if where else _describe(exc)
    return text[:_MESSAGE_LIMIT]


def is_customer_code(code: str) -> bool:
    return code in CUSTOMER_CODES or code.startswith("KMS.")


def is_transient_code(code: str) -> bool:
    return code in TRANSIENT_CODES


def classify_s3_error(
    exc: BaseException,
    *,
    operation: str | None = None,
    target: str | None = None,
    in_progress: bool = True,
) -> CustomerFault | TransientFault | None:
    """The fault an S3 (botocore) error stands for, with its code in the message; None if unknown."""
    if isinstance(exc, ExportsError):
        return exc if isinstance(exc, (CustomerFault, TransientFault)) else None
    message = _message(exc, operation, target)
    code = error_code(exc)
    if isinstance(exc, ClientError):
        status = _status(exc) or 0
        if is_customer_code(code):
            return CustomerFault(message, code=code)
        if is_transient_code(code) or status >= 500 or status == 429:
            return TransientFault(message, code=code)
        if status in (301, 401, 403):  # HEAD responses carry no body, hence no code: judge by status
            return CustomerFault(message, code=code)
        return None
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CustomerFault(message + " (no usable AWS credentials: set access_key_id/secret_access_key "
                             "or configure the default credential chain)", code=code)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, SSLError)):
        # ConnectTimeoutError and SSLError are ConnectionError subclasses too; the order only names them.
        if in_progress:
            return TransientFault(message, code=code)
        return CustomerFault(message + " (the endpoint never answered: check endpoint_url and region)",
                             code=code)
    if isinstance(exc, (ReadTimeoutError, ConnectionClosedError, ResponseStreamingError,
                        IncompleteReadError, ProxyConnectionError, CredentialRetrievalError,
                        HTTPClientError)):
        return TransientFault(message, code=code)
    return None


def classify_local_error(
    exc: BaseException, *, operation: str | None = None, target: str | None = None
) -> CustomerFault | TransientFault | None:
    """Local destinations: permissions, a missing or read-only directory are the operator's to fix."""
    if not isinstance(exc, OSError):
        return None
    where = " ".join(part for part in (operation, target) if part)
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    message = f"{where} failed: {name}: {exc.strerror or exc}"[:_MESSAGE_LIMIT]
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
        return CustomerFault(message, code=name)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        # a file sits where a key needs a directory (S3 allows "a" and "a/b" side by side; disks don't)
        return CustomerFault(message + " (a key's directory collides with an existing file)", code=name)
    if exc.errno in (errno.EAGAIN, errno.EINTR, errno.EBUSY):
        return TransientFault(message, code=name)
    return None


def fault_for_failures(what: str, failures: list[tuple[str, str, str]]) -> ExportsError:
    """One error for a batch with per-key failures ``(key, code, message)``, naming the first few.

    Transient if any key may succeed on a retry; the customer's if every key failed for their reason.
    """
    codes = {code for _, code, _ in failures}
    shown = "; ".join(f"{key}: {code}: {message}" for key, code, message in failures[:10])
    more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
    text = f"{what}: {len(failures)} key(s) failed: {shown}{more}"[:_MESSAGE_LIMIT]
    first = failures[0][1] if failures else None
    if any(is_transient_code(code) for code in codes):
        return TransientFault(text, code=first)
    if codes and all(is_customer_code(code) for code in codes):
        return CustomerFault(text, code=first)
    return ExportsError(text, code=first)
