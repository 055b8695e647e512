"""PostHog's capture API (`POST {host}/batch/`): the only code that speaks PostHog's wire protocol.

A thin client of our own rather than the `posthog` package: its queueing client drops a batch after its
retries and only logs it (environment-facts §7), and its request layer (`posthog.request.batch_post`)
stamps every body with `sent_at` (which PostHog uses to re-base event timestamps, so the same event sent
twice would not be the same event) and JSON-encodes Python dicts, while our events arrive as finished
JSON bytes from ClickHouse (`sinks/posthog/mapping.py`). What remains is small: gzip, a body of
`{"api_key", "historical_migration", "batch": [...]}`, retries and fault classes.

Wire contract (PostHog capture; posthog-python 7.91.1 `posthog/consumer.py` and `posthog/request.py`):
- `POST {host}/batch/`, `Content-Type: application/json`, `Content-Encoding: gzip`, the project API key
  as `api_key` in the body (no Authorization header).
- A request body stays under `MAX_REQUEST_BYTES` = 5 MiB uncompressed: the SDK's `BATCH_SIZE_LIMIT`
  ("the maximum request body size is currently 20MiB, let's be conservative").
- An event stays under `MAX_EVENT_BYTES`: the SDK drops events over 900 KiB (`MAX_MSG_SIZE = 900 * 1024`),
  and PostHog's capture service (PostHog/posthog `rust/capture/src/config.rs`,
  `kafka_producer_message_max_bytes` default 1,000,000) produces each event to Kafka serialized a second
  time inside a JSON string (`CapturedEvent.data`, rust/capture `src/v0_request.rs`), where every `"` and
  `\\` is escaped again. So an event is measured as its bytes plus one per `"` and `\\` (`event_cost`) and
  must stay at or under 900 KiB, which leaves room for the envelope under Kafka's 1,000,000 bytes.

Faults: 400, 401, 403 (and 404/405/413, which mean the host is not a PostHog capture endpoint or refused
the shape) are the customer's; 408, 429 (honouring `Retry-After`), 5xx, timeouts, refused or reset
connections are transient and retried with exponential backoff and full jitter; a host name that does not
resolve is the customer's. Messages name the masked host, never the key.

`PostHogResource` is the Dagster resource with the deployment's tuning (timeouts, attempts, concurrency);
the host and key belong to each project's integration (state DB), so the resource builds one
`PostHogClient` per integration with `client(host, api_key)`.
"""

from __future__ import annotations

import copy
import email.utils
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg
import requests
from requests.adapters import HTTPAdapter

from exports_pipeline.errors import CustomerFault, ExportsError, TransientFault
from exports_pipeline.resources.object_store.retry import RetryPolicy, call_with_retries
from exports_pipeline.urls import mask_url, scrub_secrets

MiB = 1024 * 1024
MAX_REQUEST_BYTES = 5 * MiB
MAX_EVENT_BYTES = 900 * 1024
BATCH_PATH = "/batch/"
# Key check for `validate`: the feature-flags endpoint authenticates the project API key and records no
# event (https://posthog.com/tutorials/api-feature-flags: `POST /flags/?v=2` with `api_key` and
# `distinct_id`). A batch of zero events is no check: capture answers 400 `EmptyBatch` before the key.
FLAGS_PATH = "/flags/?v=2"
VALIDATE_DISTINCT_ID = "langfuse-exports-pipeline-validate"
USER_AGENT = "langfuse-exports-pipeline"

_RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


def event_cost(line: bytes | memoryview) -> int:
    """An event's size as PostHog's Kafka message holds it: its bytes plus one per `"` and `\\`."""
    data = bytes(line)
    return len(data) + data.count(b'"') + data.count(b"\\")


class PostHogTransient(TransientFault):
    """Busy or unreachable: the HTTP status (None for network errors) and the server's Retry-After."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, code=code or (f"HTTP {status}" if status else None))
        self.status = status
        self.retry_after = retry_after


class PostHogRefused(CustomerFault):
    """The customer's: a refused key, a host that is not PostHog, a rejected request."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code or (f"HTTP {status}" if status else None))
        self.status = status


@dataclass
class Sent:
    """What one window's sending did (the caller adds events and cut counts)."""

    requests: int = 0
    bytes_raw: int = 0
    bytes_gzip: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, raw: int, gz: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_raw += raw
            self.bytes_gzip += gz


class PostHogClient:
    """One integration's PostHog host and key. Thread-safe: one HTTP session per sending thread."""

    def __init__(self, host: str, api_key: str, *, timeout_seconds: float = 30.0, connect_timeout_seconds: float = 10.0,
                 policy: RetryPolicy | None = None, concurrency: int = 4, gzip_level: int = 1) -> None:
        if not host.startswith(("http://", "https://")):
            raise CustomerFault(f"PostHog host {mask_url(host)} is not an http(s) URL", code="InvalidHost")
        self.host = host.rstrip("/")
        self._key = api_key
        self.timeout = (connect_timeout_seconds, timeout_seconds)
        self.policy = policy or RetryPolicy(max_attempts=8, backoff_base_seconds=1.0, backoff_max_seconds=30.0)
        self.concurrency = max(1, concurrency)
        self.gzip_level = gzip_level
        self._local = threading.local()
        self._prefix_cache: dict[bool, bytes] = {}

    def __repr__(self) -> str:  # never the key
        return f"PostHogClient(host={mask_url(self.host)!r})"

    # -------------------------------------------------------------------------------- request bodies

    def body_prefix(self, historical: bool) -> bytes:
        """`{"api_key":...,"historical_migration":...,"batch":[` (no `sent_at`: see the module docstring)."""
        if historical not in self._prefix_cache:
            head = json.dumps({"api_key": self._key, "historical_migration": historical})
            self._prefix_cache[historical] = head[:-1].encode() + b',"batch":['
        return self._prefix_cache[historical]

    BODY_SUFFIX = b"]}"

    def envelope_bytes(self, historical: bool) -> int:
        return len(self.body_prefix(historical)) + len(self.BODY_SUFFIX)

    # -------------------------------------------------------------------------------- sending

    @contextmanager
    def sender(self, *, historical: bool, sent: Sent | None = None) -> Iterator[_Sender]:
        """A bounded pool of `concurrency` threads that gzip and post batches; `submit(events)` blocks
        while `concurrency` more batches are already waiting, so memory stays bounded. Leaving the block
        waits for every batch and raises the first fault (the others are cancelled or finish)."""
        pending = _Sender(self, historical, sent or Sent())
        try:
            yield pending
            pending.wait_all()
        finally:
            pending.shutdown()

    def post_batch(self, events: bytes | memoryview, *, historical: bool, sent: Sent,
                   cancel: threading.Event | None = None) -> None:
        """Post one batch (`events`: the JSON objects joined by commas), retried on transient faults."""
        raw = b"".join((self.body_prefix(historical), events, self.BODY_SUFFIX))
        compressor = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
        body = compressor.compress(raw) + compressor.flush()
        del raw

        def attempt() -> None:
            self._post(BATCH_PATH, body, gzip=True)

        retries = _Counter()
        call_with_retries(attempt, policy=self.policy, classify=retries.classify, what=f"PostHog {self._where()}",
                          cancel=cancel)
        with sent._lock:
            sent.retries += retries.count
        sent.add(len(events) + self.envelope_bytes(historical), len(body))

    def check_key(self) -> str:
        """Ask PostHog whether the project API key is valid, without sending any event (one attempt)."""
        body = json.dumps({"api_key": self._key, "distinct_id": VALIDATE_DISTINCT_ID}).encode()
        response = self._post(FLAGS_PATH, body, gzip=False)
        return f"PostHog at {mask_url(self.host)} accepted the project API key (HTTP {response.status_code})"

    # -------------------------------------------------------------------------------- HTTP

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
            session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
            self._local.session = session
        return session

    def _where(self) -> str:
        return mask_url(self.host)

    def _post(self, path: str, body: bytes, *, gzip: bool) -> requests.Response:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        url = self.host + path
        try:
            response = self._session().post(url, data=body, headers=headers, timeout=self.timeout,
                                            allow_redirects=False)
        except requests.RequestException as exc:
            raise self._network_fault(exc) from None
        if 200 <= response.status_code < 300:
            return response
        raise self._status_fault(response, path)

    def _status_fault(self, response: requests.Response, path: str) -> ExportsError:
        status = response.status_code
        detail = self._scrub(response.text[:300].strip().replace("\n", " "))
        where = f"PostHog at {self._where()}{path.split('?')[0]}"
        if status in _RETRYABLE_STATUS:
            return PostHogTransient(f"{where} answered {status}{': ' + detail if detail else ''}", status=status,
                                    retry_after=_retry_after(response.headers.get("Retry-After")))
        if status in (401, 403):
            why = "refused the project API key"
        elif 300 <= status < 400:
            why = f"redirected the request (to {mask_url(response.headers.get('Location', '?'))}); set the final host"
        elif status in (404, 405):
            why = "has no capture endpoint there (is the host a PostHog instance?)"
        else:
            why = "rejected the request"
        return PostHogRefused(f"{where} {why}: HTTP {status}{': ' + detail if detail else ''}", status=status)

    def _network_fault(self, exc: requests.RequestException) -> ExportsError:
        where = f"PostHog at {self._where()}"
        if isinstance(exc, requests.Timeout):
            return PostHogTransient(f"{where} timed out ({type(exc).__name__})", code="Timeout")
        if _unresolvable(exc):
            return PostHogRefused(f"{where}: the host name does not resolve", code="NameResolution")
        if isinstance(exc, requests.exceptions.SSLError):
            return PostHogRefused(f"{where}: TLS failed ({self._scrub(str(exc))[:200]})", code="TLS")
        if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return PostHogTransient(f"{where}: connection failed ({_reason(exc)})", code="ConnectionError")
        return PostHogRefused(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))[:200]}")

    def _scrub(self, text: str) -> str:
        text = scrub_secrets(text, self.host)
        return text.replace(self._key, "***") if self._key else text


class _Counter:
    """Classifier for `call_with_retries` that also counts the retries it allows."""

    def __init__(self) -> None:
        self.count = 0

    def classify(self, exc: Exception, last: bool) -> ExportsError | None:
        if isinstance(exc, TransientFault):
            self.count += 0 if last else 1
            return copy.copy(exc)  # a new object: `call_with_retries` re-raises the very same one untouched
        return exc if isinstance(exc, ExportsError) else None


class _Sender:
    """Batches in flight for one window (see `PostHogClient.sender`)."""

    def __init__(self, client: PostHogClient, historical: bool, sent: Sent) -> None:
        self.client, self.historical, self.sent = client, historical, sent
        self._pool = ThreadPoolExecutor(max_workers=client.concurrency, thread_name_prefix="posthog-send")
        self._slots = threading.BoundedSemaphore(client.concurrency * 2)
        self._cancel = threading.Event()
        self._futures: list[Future] = []
        self._first_error: BaseException | None = None
        self._error_lock = threading.Lock()

    def submit(self, events: bytes | memoryview) -> None:
        self.raise_if_failed()
        self._slots.acquire()
        try:
            future = self._pool.submit(self._run, bytes(events))
        except BaseException:
            self._slots.release()
            raise
        self._futures = [f for f in self._futures if not f.done()] + [future]

    def _run(self, events: bytes) -> None:
        try:
            if self._cancel.is_set():
                return
            self.client.post_batch(events, historical=self.historical, sent=self.sent, cancel=self._cancel)
        except BaseException as exc:
            with self._error_lock:
                if self._first_error is None:
                    self._first_error = exc
            self._cancel.set()
        finally:
            self._slots.release()

    def raise_if_failed(self) -> None:
        if self._first_error is not None:
            raise self._first_error

    def wait_all(self) -> None:
        for future in list(self._futures):
            future.result()
        self.raise_if_failed()

    def shutdown(self) -> None:
        if self._first_error is not None or not all(f.done() for f in self._futures):
            self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _unresolvable(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return True
        text = str(current)
        if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name resolution" in text:
            return "Temporary failure" not in text
        current = current.__cause__ or current.__context__ or (current.args[0] if current.args and isinstance(current.args[0], BaseException) else None)
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "RemoteDisconnected",
                   "Broken pipe", "IncompleteRead"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


class PostHogResource(dg.ConfigurableResource):
    """The deployment's PostHog tuning; `client(host, api_key)` gives one integration's client."""

    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    max_attempts: int = 8
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    retry_after_max_seconds: float = 120.0
    concurrency: int = 4
    gzip_level: int = 1
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_event_bytes: int = MAX_EVENT_BYTES

    def client(self, host: str, api_key: str) -> PostHogClient:
        policy = RetryPolicy(max_attempts=self.max_attempts, backoff_base_seconds=self.backoff_base_seconds,
                             backoff_max_seconds=self.backoff_max_seconds,
                             retry_after_max_seconds=self.retry_after_max_seconds)
        return PostHogClient(host, api_key, timeout_seconds=self.timeout_seconds,
                             connect_timeout_seconds=self.connect_timeout_seconds, policy=policy,
                             concurrency=self.concurrency, gzip_level=self.gzip_level)
