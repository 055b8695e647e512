"""The pipeline's exception taxonomy: who is at fault decides what happens next.

Langfuse and PostHog both learned that an export failure needs one of three reactions, and that
guessing wrong is expensive: retrying a revoked key hammers the customer's bucket for days, while
disabling an integration because S3 said SlowDown loses data. So every error that leaves a resource
is one of these classes, and orchestration maps them once:

- ``CustomerFault``: the customer's configuration is wrong (credentials, bucket, permissions,
  endpoint). Never retried; the integration is disabled and ``last_error`` tells them what to fix.
- ``TransientFault``: the remote side is busy or the network blinked. Retried with backoff + jitter.
- ``ConfigError``: a setting or input is invalid before anything was attempted; names the field.
- ``DeploymentFault``: this deployment is wrong, not the customer (an ``ENCRYPTION_KEY`` that cannot
  decrypt the stored secret, an events table without a column the export needs). Fails at once, is
  never retried, and never disables the customer's integration; the message names the setting.
- ``ObjectTooLarge``: the data does not fit one object with the chosen part size. Retrying the same
  thing fails the same way, and it is not the customer's doing either: the caller must split.
- ``ObjectNotFound``: a read of a key that does not exist; callers decide whether that matters.
- ``ExportCancelled``: a running export was asked to stop; its upload was aborted, nothing committed.

Messages never contain secrets: they are stored in ``last_error`` and shown in the Dagster UI.
``code`` carries the machine-readable cause (an S3 error code such as ``AccessDenied``) when known.
"""

from __future__ import annotations


class ExportsError(Exception):
    """Base of every error the pipeline raises on purpose."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class CustomerFault(ExportsError):
    """The customer's configuration is wrong; retrying cannot help. Disable the integration."""


class TransientFault(ExportsError):
    """Busy or unreachable for now (timeouts, 5xx, throttling, dropped connections); retry later."""


class ConfigError(ExportsError, ValueError):
    """An invalid setting or input, detected before any side effect; ``field`` names it."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class DeploymentFault(ExportsError):
    """Our deployment is misconfigured (key, schema); fail now, do not retry, do not blame the customer.

    ``setting`` names what the operator must fix (``ENCRYPTION_KEY``, ``EXPORTS_EVENTS_TABLE``).
    """

    def __init__(self, message: str, *, setting: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.setting = setting


class ExportCancelled(ExportsError):
    """The person who asked for the export cancelled it while it ran; nothing was committed."""


class ObjectTooLarge(ExportsError):
    """An object would exceed what one S3 object (10,000 parts of the chosen size) can hold."""


class ObjectNotFound(ExportsError, LookupError):
    """The key does not exist (S3 NoSuchKey, or a missing file under a file:// destination)."""
