"""Our own retry loop, so every retry is classified, logged and bounded.

botocore's built-in retries are switched off for object store clients: they happen invisibly and know
nothing of our fault taxonomy. Here a call is retried only when
its error classifies as ``TransientFault``, with exponential backoff and full jitter (AWS architecture
blog "Exponential Backoff And Jitter"), at most ``max_attempts`` times. A cancel event lets a failing
multipart upload stop its other parts' retries instead of sleeping through them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from exports_pipeline.errors import ExportsError, TransientFault

log = logging.getLogger(__name__)
T = TypeVar("T")

# (exception, is_last_attempt) -> the fault it stands for, or None to re-raise it untouched
Classifier = Callable[[Exception, bool], ExportsError | None]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    # A server's own wait (HTTP Retry-After, carried as a fault's `retry_after`) is honoured up to this.
    retry_after_max_seconds: float = 120.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base × 2^(attempt-1))]."""
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    classify: Classifier,
    what: str,
    cancel: threading.Event | None = None,
) -> T:
    """``fn()``, retried on transient faults; raises the classified fault (original as ``__cause__``)."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            cancelled = cancel is not None and cancel.is_set()
            last = attempt >= policy.max_attempts or cancelled
            fault = classify(exc, last)
            if fault is None:
                raise
            if fault is exc:
                raise
            if not isinstance(fault, TransientFault):
                raise fault from exc
            if last:
                if attempt > 1:
                    fault = TransientFault(f"{fault} (gave up after {attempt} attempts)", code=fault.code)
                raise fault from exc
            delay = policy.delay(attempt)
            hint = getattr(fault, "retry_after", None)
            if hint:
                delay = max(delay, min(float(hint), policy.retry_after_max_seconds))
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.2fs",
                        what, attempt, policy.max_attempts, fault.code, delay)
            if cancel is not None:
                if cancel.wait(delay):
                    raise fault from exc
            else:
                time.sleep(delay)
            attempt += 1
