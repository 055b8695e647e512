"""Who is at fault when an object store call fails.

The lists follow Langfuse's customer-fault classification (langfuse-exports §3.7) and PostHog's
non-retryable S3 errors (anchors §A6): credentials, permissions and bucket problems are the customer's
and are never retried; throttling, timeouts, 5xx and dropped connections are retried. Anything else is
left unclassified (``None``): usually our own bug, which should fail loudly rather than be retried or
blamed on the customer.

A connection that cannot be made is judged by who said what, never by whether the endpoint has
answered before: a server that went away for a minute refuses connections exactly like an endpoint
that was typed wrong, and calling that the customer's fault switched integrations off during short
outages. So only statements are the customer's: an error the server states (above), a host name the
resolver says does not exist (the name in ``endpoint_url`` is theirs), and a TLS certificate the server
presents that does not verify (the server stated an identity that is not the endpoint's: their
certificate or their URL, and retrying gets the same certificate). Connection refused or reset,
timeouts, a resolver that cannot be reached, TLS handshakes cut short and 5xx are transient: retried
per request here, then by the step's retry policy.
"""

from __future__ import annotations

import errno
import socket
import ssl

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
    exc: BaseException, *, operation: str | None = None, target: str | None = None
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
    if isinstance(exc, EndpointConnectionError) and _name_does_not_resolve(exc):
        return CustomerFault(message + " (the endpoint's host name does not resolve: check endpoint_url "
                             "and region)", code=code)
    if isinstance(exc, SSLError) and _certificate_rejected(exc):
        return CustomerFault(message + " (the endpoint's TLS certificate does not verify: check "
                             "endpoint_url, or give the server a certificate valid for that host)",
                             code=code)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, SSLError, ReadTimeoutError,
                        ConnectionClosedError, ResponseStreamingError, IncompleteReadError,
                        ProxyConnectionError, CredentialRetrievalError, HTTPClientError)):
        return TransientFault(message, code=code)
    return None


# getaddrinfo's answers that state the name has no address; EAI_AGAIN/EAI_FAIL (no resolver, SERVFAIL)
# say nothing about the name and stay transient.
_NO_SUCH_NAME = frozenset(n for n in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if n is not None)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: botocore keeps urllib3's error in ``kwargs['error']``, urllib3 the
    socket error as ``__cause__``."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(found) < 10:
        current = todo.pop(0)
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        wrapped = getattr(current, "kwargs", None)
        todo += [wrapped.get("error") if isinstance(wrapped, dict) else None, current.__cause__,
                 current.__context__]
    return found


def _name_does_not_resolve(exc: BaseException) -> bool:
    return any(isinstance(e, socket.gaierror) and e.errno in _NO_SUCH_NAME for e in _causes(exc))


def _certificate_rejected(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(exc))


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
