"""Mixpanel's `/import` endpoint: the only code that speaks its wire protocol.

`MixpanelResource` is a Dagster resource holding how to talk to Mixpanel (timeouts, concurrency, backoff);
`client(integration, box)` gives a `MixpanelClient` for one integration's region, endpoint and credentials,
because those come from a state row per run, not from the deployment's configuration.

A thin client, not the `mixpanel` SDK: the SDK sends 50 form-encoded events per request without `strict`
or gzip, does not retry 429 without Retry-After, and resends batches that already succeeded
(environment-facts §7). Wire rules (docs.mixpanel.com/reference/import-events):
- `POST {base}/import?strict=1[&project_id=N]`, NDJSON, gzip; at most 2,000 events and 10 MB uncompressed
  per request (`413` anyway: the request is split in two and both halves sent, down to one event).
- Basic auth: the project token with an empty password, or a service account (username:secret) with the
  numeric `project_id`.
- `200`: all imported. `400` with `failed_records`: the valid events are in; the failures are returned for
  the caller to record, never retried (a retry fails the same way and counts toward the rate limit).
- `401`/`403` and any other 4xx (a wrong `--endpoint`: 404, 405), a redirect, an unverifiable certificate:
  `CustomerFault`. `429`, `408`, 5xx, timeouts, refused or dropped connections: `TransientFault`, retried
  with exponential backoff from 2 s doubling to 60 s plus 1-5 s jitter (Mixpanel's advice), never less than
  `Retry-After`. A host name that does not resolve is retried too and is the customer's on the last attempt.
We write the backoff loop rather than use urllib3's `Retry`: that one retries the first time immediately
and draws its jitter from [0, x), not Mixpanel's schedule.

Secrets never appear in a message: URLs are masked (`urls.mask_url`) and quoted server text is scrubbed.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

import dagster as dg
import urllib3
from pydantic import Field
from urllib3.exceptions import (
    HTTPError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    SSLError,
    TimeoutError as Urllib3Timeout,
)
from urllib3.util.retry import Retry

from exports_pipeline.errors import ConfigError, CustomerFault, DeploymentFault, ExportsError, TransientFault
from exports_pipeline.urls import mask_url

if TYPE_CHECKING:
    from exports_pipeline.crypto import SecretBox
    from exports_pipeline.state.models import MixpanelIntegration

log = logging.getLogger(__name__)

REGIONS = ("api", "api-eu", "api-in")  # US, EU residency, India residency
MAX_EVENTS_PER_REQUEST = 2_000
MAX_REQUEST_BYTES = 10_000_000
FAILED_SAMPLES = 5  # failed records kept per request (with their $insert_id) for metadata and last_error
_RETRY_AFTER_MAX = 600.0
_RESPONSE_QUOTE_CHARS = 300


def region_base_url(region: str) -> str:
    if region not in REGIONS:
        raise ConfigError(f"Mixpanel region must be one of {', '.join(REGIONS)}, got {region!r}", field="region")
    return f"https://{region}.mixpanel.com"


def import_url(base_url: str, project_id: str | None = None) -> str:
    """`{base}/import?strict=1`, plus `project_id` for a service account."""
    url = base_url.rstrip("/") + "/import?strict=1"
    return url + f"&project_id={quote(project_id, safe='')}" if project_id else url


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class FailedRecord:
    """One event Mixpanel refused (`failed_records` of a 400 under strict=1)."""

    insert_id: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.insert_id}: {self.field}: {self.message}"


@dataclass
class SendTotals:
    """What a sequence of requests achieved (summed over threads under the sender's lock)."""

    requests: int = 0  # HTTP requests that got an answer (a 413 split counts each half)
    events: int = 0  # events in the requests sent
    imported: int = 0  # events Mixpanel said it imported
    failed: int = 0  # events Mixpanel refused (400 failed_records)
    failed_samples: list[FailedRecord] = field(default_factory=list)
    bytes_uncompressed: int = 0
    bytes_sent: int = 0  # gzip'd bodies, retries included
    retries: int = 0
    splits: int = 0  # 413 answers that made us halve a request

    def add(self, other: SendTotals) -> None:
        for name in ("requests", "events", "imported", "failed", "bytes_uncompressed", "bytes_sent", "retries",
                     "splits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        room = FAILED_SAMPLES - len(self.failed_samples)
        if room > 0:
            self.failed_samples.extend(other.failed_samples[:room])


@dataclass(frozen=True)
class ClientSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # Langfuse's LANGFUSE_MIXPANEL_TIMEOUT_MS
    max_attempts: int = 8
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    jitter_min_seconds: float = 1.0
    jitter_max_seconds: float = 5.0
    max_in_flight: int = 4
    gzip_level: int = 1
    max_events_per_request: int = MAX_EVENTS_PER_REQUEST
    max_request_bytes: int = MAX_REQUEST_BYTES

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "backoff_max_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive", field=name)
        if not 0 <= self.jitter_min_seconds <= self.jitter_max_seconds or self.backoff_base_seconds < 0:
            raise ConfigError("backoff and jitter must satisfy 0 <= jitter_min <= jitter_max, base >= 0",
                              field="jitter_min_seconds")
        if self.max_attempts < 1 or self.max_in_flight < 1:
            raise ConfigError("max_attempts and max_in_flight must be at least 1", field="max_in_flight")
        if not 1 <= self.max_events_per_request <= MAX_EVENTS_PER_REQUEST:
            raise ConfigError(f"max_events_per_request must be 1..{MAX_EVENTS_PER_REQUEST}",
                              field="max_events_per_request")
        if not 1 <= self.max_request_bytes <= MAX_REQUEST_BYTES:
            raise ConfigError(f"max_request_bytes must be 1..{MAX_REQUEST_BYTES}", field="max_request_bytes")
        if not 0 <= self.gzip_level <= 9:
            raise ConfigError("gzip_level must be 0..9", field="gzip_level")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Before attempt `attempt + 1`: base x 2^(attempt-1), capped, never under Retry-After, plus jitter."""
        backoff = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, _RETRY_AFTER_MAX))
        return backoff + random.uniform(self.jitter_min_seconds, self.jitter_max_seconds)


# ------------------------------------------------------------------------------------------------ client


class _Retry(Exception):
    """Internal: a transient answer worth another attempt."""

    def __init__(self, fault: ExportsError, retry_after: float | None = None) -> None:
        super().__init__(fault.message)
        self.fault = fault
        self.retry_after = retry_after


class _TooLarge(Exception):
    """Internal: 413, the request must be split."""


class MixpanelClient:
    """`/import` for one integration: thread-safe, one connection pool of `max_in_flight` connections."""

    def __init__(self, base_url: str, *, username: str, secret: str = "", project_id: str | None = None,
                 settings: ClientSettings | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"Mixpanel endpoint must be an http(s) URL, got {mask_url(base_url)}", field="endpoint")
        if not username:
            raise ConfigError("a Mixpanel project token or service account username is required", field="token")
        self.settings = settings or ClientSettings()
        self.url = import_url(base_url, project_id)
        self.masked_url = mask_url(self.url)
        self._secrets = tuple(s for s in (username if not project_id else "", secret) if s)
        token = base64.b64encode(f"{username}:{secret}".encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}", "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip",
            "Accept": "application/json", "User-Agent": "exports-pipeline",
        }
        self._http = urllib3.PoolManager(
            num_pools=2, maxsize=self.settings.max_in_flight, block=True, retries=False,
            timeout=urllib3.Timeout(connect=self.settings.connect_timeout, read=self.settings.read_timeout))

    def __repr__(self) -> str:
        return f"MixpanelClient({self.masked_url})"

    def close(self) -> None:
        self._http.clear()

    def __enter__(self) -> MixpanelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------- send

    def send(self, lines: list[bytes], *, cancel: threading.Event | None = None) -> SendTotals:
        """Import `lines` (one event JSON each) in one request, or in halves after a 413."""
        totals = SendTotals()
        self._send(lines, totals, cancel)
        return totals

    def _send(self, lines: list[bytes], totals: SendTotals, cancel: threading.Event | None) -> None:
        body = b"\n".join(lines)
        if len(lines) > self.settings.max_events_per_request or len(body) > self.settings.max_request_bytes:
            raise ValueError(f"a request of {len(lines)} events / {len(body)} bytes exceeds the caps")
        try:
            self._request(body, len(lines), totals, cancel)
        except _TooLarge:
            if len(lines) == 1:
                raise CustomerFault(f"Mixpanel at {self.masked_url} refused one event of {len(body):,} bytes as "
                                    "too large (413); a proxy in between may limit request sizes",
                                    code="413") from None
            totals.splits += 1
            half = len(lines) // 2
            self._send(lines[:half], totals, cancel)
            self._send(lines[half:], totals, cancel)

    def _request(self, body: bytes, events: int, totals: SendTotals, cancel: threading.Event | None,
                 max_attempts: int | None = None) -> None:
        gz = zlib.compress(body, self.settings.gzip_level, wbits=31)  # releases the GIL: threads compress too
        attempts = max_attempts or self.settings.max_attempts
        attempt = 1
        while True:
            totals.bytes_sent += len(gz)
            try:
                self._answer(self._post(gz, last=attempt >= attempts), events, totals)
                totals.bytes_uncompressed += len(body)
                totals.events += events
                return
            except _Retry as retry:
                cancelled = cancel is not None and cancel.is_set()
                if attempt >= attempts or cancelled:
                    fault = retry.fault
                    if attempt > 1:
                        fault = type(fault)(f"{fault.message} (gave up after {attempt} attempts)", code=fault.code)
                    raise fault from None
                delay = self.settings.delay(attempt, retry.retry_after)
                log.warning("Mixpanel import: attempt %d/%d failed (%s); retrying in %.1f s",
                            attempt, attempts, retry.fault.code, delay)
                if cancel is not None and cancel.wait(delay):
                    raise retry.fault from None
                if cancel is None:
                    time.sleep(delay)
                totals.retries += 1
                attempt += 1

    def _post(self, gz: bytes, *, last: bool) -> urllib3.BaseHTTPResponse:
        try:
            return self._http.request("POST", self.url, body=gz, headers=self._headers, redirect=False,
                                      preload_content=True)
        except NameResolutionError:
            fault: ExportsError = CustomerFault(
                f"Mixpanel endpoint {self.masked_url}: host name does not resolve", code="NameResolution")
            if last:
                raise fault from None
            raise _Retry(TransientFault(fault.message, code="NameResolution")) from None
        except SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                raise CustomerFault(f"Mixpanel endpoint {self.masked_url}: TLS certificate cannot be verified",
                                    code="SSLCertificate") from None
            raise _Retry(TransientFault(f"Mixpanel at {self.masked_url}: TLS error", code="SSLError")) from None
        except NewConnectionError:  # refused (urllib3 makes it a kind of connect timeout; it is not one)
            raise _Retry(TransientFault(f"Mixpanel at {self.masked_url}: connection failed (refused)",
                                        code="ConnectionRefused")) from None
        except Urllib3Timeout:
            raise _Retry(TransientFault(f"Mixpanel at {self.masked_url} did not answer within "
                                        f"{self.settings.read_timeout:g} s", code="Timeout")) from None
        except LocationParseError:
            raise ConfigError(f"Mixpanel endpoint {self.masked_url} is not a valid URL", field="endpoint") from None
        except (ProtocolError, HTTPError, OSError) as exc:  # refused, reset, dropped mid-answer
            raise _Retry(TransientFault(f"Mixpanel at {self.masked_url}: connection failed "
                                        f"({type(exc).__name__})", code="ConnectionError")) from None

    def _answer(self, resp: urllib3.BaseHTTPResponse, events: int, totals: SendTotals) -> None:
        status = resp.status
        totals.requests += 1
        if status == 200:
            body = _json(resp.data)
            totals.imported += int(body.get("num_records_imported", events)) if isinstance(body, dict) else events
            return
        if status == 400:
            body = _json(resp.data)
            failed = body.get("failed_records") if isinstance(body, dict) else None
            if isinstance(failed, list) and failed:
                totals.imported += int(body.get("num_records_imported") or 0)
                totals.failed += len(failed)
                totals.failed_samples.extend(_failed_record(r) for r in failed[:FAILED_SAMPLES])
                return
            raise CustomerFault(f"Mixpanel at {self.masked_url} refused the request (400): {self._quote(resp)}",
                                code="400")
        if status == 413:
            raise _TooLarge()
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        if status in (408, 429) or status >= 500:
            raise _Retry(TransientFault(f"Mixpanel at {self.masked_url} answered {status}: {self._quote(resp)}",
                                        code=str(status)), retry_after)
        if status in (401, 403):
            what = "invalid credentials" if status == 401 else "the credentials may not import into this project"
            raise CustomerFault(f"Mixpanel at {self.masked_url} answered {status} ({what}): {self._quote(resp)}",
                                code=str(status))
        if 300 <= status < 400:
            raise CustomerFault(f"Mixpanel endpoint {self.masked_url} redirects ({status}) to "
                                f"{mask_url(resp.headers.get('Location', '?'))}; configure the final URL",
                                code=str(status))
        raise CustomerFault(f"Mixpanel endpoint {self.masked_url} answered {status}: {self._quote(resp)}",
                            code=str(status))

    def _quote(self, resp: urllib3.BaseHTTPResponse) -> str:
        """The server's explanation: its `error` field or the start of its body, secrets scrubbed."""
        body = _json(resp.data)
        text = str(body.get("error")) if isinstance(body, dict) and body.get("error") else \
            resp.data[:_RESPONSE_QUOTE_CHARS].decode("utf-8", "replace")
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())[:_RESPONSE_QUOTE_CHARS] or "(empty body)"

    # ---------------------------------------------------------------------------------------- validate

    def validate(self, probe_line: bytes) -> SendTotals:
        """Send `probe_line`, an event Mixpanel must refuse (see `sinks/mixpanel/validate.py`), once, no
        retries: credentials, project and endpoint are checked, nothing is imported."""
        totals = SendTotals()
        try:
            self._request(probe_line, 1, totals, None, max_attempts=1)
        except _TooLarge:
            raise CustomerFault(f"Mixpanel at {self.masked_url} refused a one-event request as too large (413)",
                                code="413") from None
        return totals

    # ----------------------------------------------------------------------------------- concurrency

    def sender(self) -> Sender:
        return Sender(self)


class Sender:
    """Requests in flight, bounded: `submit` blocks while `max_in_flight` are outstanding, so memory holds
    at most that many requests. The first fault stops the rest (their backoff waits end at once) and is
    raised by `submit` or `finish`; a customer's fault wins over a transient one."""

    def __init__(self, client: MixpanelClient) -> None:
        self.client = client
        self.totals = SendTotals()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=client.settings.max_in_flight, thread_name_prefix="mixpanel")
        self._pending: set[Future] = set()
        self._faults: list[BaseException] = []

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is not None:
            self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, lines: list[bytes]) -> None:
        self._raise_if_failed()
        while len(self._pending) >= self.client.settings.max_in_flight:
            self._reap(wait(self._pending, return_when=FIRST_COMPLETED).done)
            self._raise_if_failed()
        self._pending.add(self._pool.submit(self._run, lines))

    def finish(self) -> SendTotals:
        """Wait for every request; raise the first fault, else return the totals."""
        if self._pending:
            self._reap(wait(self._pending).done)
        self._raise_if_failed()
        return self.totals

    def _run(self, lines: list[bytes]) -> None:
        totals = self.client.send(lines, cancel=self._cancel)
        with self._lock:
            self.totals.add(totals)

    def _reap(self, done: set[Future]) -> None:
        for future in done:
            self._pending.discard(future)
            exc = future.exception()
            if exc is not None:
                self._faults.append(exc)
                self._cancel.set()

    def _raise_if_failed(self) -> None:
        if self._faults:
            customer = [f for f in self._faults if isinstance(f, CustomerFault)]
            raise (customer or self._faults)[0]


def _json(data: bytes) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _failed_record(record: object) -> FailedRecord:
    if not isinstance(record, dict):
        return FailedRecord("?", "?", str(record)[:200])
    insert_id = record.get("$insert_id") or record.get("insert_id") or "?"  # the docs show both spellings
    return FailedRecord(str(insert_id)[:64], str(record.get("field", "?"))[:200], str(record.get("message", ""))[:300])


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return Retry().parse_retry_after(value)  # seconds or an HTTP date
    except Exception:  # noqa: BLE001 - a malformed header is ignored, the backoff applies
        return None


# ------------------------------------------------------------------------------------------------ resource


class MixpanelResource(dg.ConfigurableResource):
    """How this deployment talks to Mixpanel; `client(integration, box)` opens one integration's client."""

    connect_timeout: float = Field(default=10.0, description="Seconds to establish a connection.")
    read_timeout: float = Field(default=30.0, description="Seconds to wait for an answer to one request.")
    max_attempts: int = Field(default=8, description="Attempts per request on 429/5xx/timeouts.")
    backoff_base_seconds: float = Field(default=2.0, description="First retry waits this long (then doubles).")
    backoff_max_seconds: float = Field(default=60.0, description="No backoff is longer (Retry-After may be).")
    jitter_min_seconds: float = Field(default=1.0, description="Jitter added to each backoff, at least.")
    jitter_max_seconds: float = Field(default=5.0, description="Jitter added to each backoff, at most.")
    max_in_flight: int = Field(default=4, description="Requests in flight per window (Mixpanel suggests 10-20 "
                                                      "clients for bulk imports; its limit is ~2 GB/min per project).")
    gzip_level: int = Field(default=1, description="gzip level of request bodies (1: fastest).")
    max_events_per_request: int = Field(default=MAX_EVENTS_PER_REQUEST, description="At most 2,000.")
    max_request_bytes: int = Field(default=MAX_REQUEST_BYTES, description="Uncompressed bytes, at most 10 MB.")

    def settings(self) -> ClientSettings:
        return ClientSettings(**{f: getattr(self, f) for f in ClientSettings.__dataclass_fields__})

    def client(self, integration: MixpanelIntegration, box: SecretBox | None) -> MixpanelClient:
        """The integration's client, its secret decrypted only here, only in memory."""
        return client_for(integration, box, self.settings())


def client_for(integration: MixpanelIntegration, box: SecretBox | None, settings: ClientSettings | None = None,
               ) -> MixpanelClient:
    from exports_pipeline.crypto import DecryptionError

    base = integration.endpoint or region_base_url(integration.mixpanel_region)
    stored = (integration.encrypted_mixpanel_service_account_secret if integration.uses_service_account
              else integration.encrypted_mixpanel_project_token)
    if box is None:  # this deployment's setting, not the customer's: never disables the integration
        raise DeploymentFault("ENCRYPTION_KEY is required to decrypt the Mixpanel credentials",
                              setting="ENCRYPTION_KEY")
    try:
        secret = box.decrypt(stored or "")
    except DecryptionError as exc:
        raise DeploymentFault(f"Mixpanel credentials of project {integration.project_id}: {exc}",
                              setting="ENCRYPTION_KEY") from None
    if integration.uses_service_account:
        return MixpanelClient(base, username=integration.mixpanel_service_account_username or "", secret=secret,
                              project_id=integration.mixpanel_project_id, settings=settings)
    return MixpanelClient(base, username=secret, settings=settings)
