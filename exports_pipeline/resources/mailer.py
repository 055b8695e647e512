"""E-mail to the person who asked for a batch export, over SMTP with the standard library.

Langfuse sends its "export ready" mail and swallows every error (langfuse-exports §2.2); here a mail
that cannot be sent is still not a failed export (the caller records a warning), but the error says
whose it is, like every resource's: ``TransientFault`` (refused or silent server, timeouts, 4xx
replies, a dropped connection) may be retried, ``CustomerFault`` (rejected credentials, a 5xx
refusal, a host that does not exist, a certificate we do not trust) will fail the same way again.

``EXPORTS_SMTP_URL`` carries user and password (percent-encoded), so every message that names the
server goes through ``mask_url``, and any text from the server or the TLS layer is scrubbed of the
password before it becomes a message: those messages end up in ``batch_exports`` and the run log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import dagster as dg
from pydantic import Field

from exports_pipeline.errors import ConfigError, CustomerFault, ExportsError, TransientFault
from exports_pipeline.settings import mask_url

SMTP_URL_ENV = "EXPORTS_SMTP_URL"
EMAIL_FROM_ENV = "EXPORTS_EMAIL_FROM"
SMTP_CA_FILE_ENV = "EXPORTS_SMTP_CA_FILE"
DEFAULT_PORTS = {"smtp": 587, "smtps": 465}  # submission ports: STARTTLS / implicit TLS (RFC 8314)
_STARTTLS_MODES = ("auto", "require")
_MESSAGE_LIMIT = 1000  # what fits a warning in batch_exports.log and the run metadata
_HEADERS = HeaderRegistry()
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

log = logging.getLogger(__name__)


def validate_email_address(addr: str, *, field: str = "--email") -> str:
    """One plain address (``name@example.com``) as the SMTP envelope and the To header need it.

    Refuses display names, lists, CR/LF (header injection) and a domain without a dot (a typo such as
    ``bob@gmail`` would otherwise surface hours later as a bounce). Returns the normalised address.
    """
    text = (addr or "").strip()
    if not text:
        raise ConfigError(f"{field}: an e-mail address is required", field=field)
    try:
        parsed = Address(addr_spec=text)
    except Exception as exc:  # the parser raises ValueError, HeaderParseError, even IndexError
        raise ConfigError(f"{field}={text!r} is not an e-mail address ({_first_line(exc)})", field=field) from None
    domain = parsed.domain
    if not (domain.startswith("[") and domain.endswith("]")):  # a domain literal is taken as written
        domain = _ascii_hostname(domain)
    if not parsed.username or not domain:
        raise ConfigError(
            f"{field}={text!r} is not an e-mail address: expected name@example.com", field=field)
    return Address(username=parsed.username, domain=domain).addr_spec


def _ascii_hostname(domain: str) -> str:
    """The domain in IDNA form (``bücher.de`` -> ``xn--bcher-kva.de``, so no server needs SMTPUTF8 for
    it), or "" when it is not a host name with at least two labels."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    labels = ascii_domain.rstrip(".").split(".")
    ok = len(labels) >= 2 and all(_HOSTNAME_LABEL.match(label) for label in labels)
    return ascii_domain if ok else ""


def _validate_from(value: str) -> Address:
    """``EXPORTS_EMAIL_FROM``: one address, optionally with a display name (``Exports <noreply@x.io>``)."""
    text = value.strip()
    try:
        header = _HEADERS("from", text)
    except Exception as exc:  # CR/LF and other unparseable input
        raise ConfigError(f"{EMAIL_FROM_ENV}={text!r} is not an e-mail address ({_first_line(exc)})",
                          field=EMAIL_FROM_ENV) from None
    if header.defects or len(header.addresses) != 1:
        raise ConfigError(f"{EMAIL_FROM_ENV}={text!r} must be one address such as noreply@example.com "
                          "or 'Exports <noreply@example.com>'", field=EMAIL_FROM_ENV)
    validate_email_address(header.addresses[0].addr_spec, field=EMAIL_FROM_ENV)
    return header.addresses[0]


@dataclass(frozen=True, repr=False)
class SmtpTarget:
    """A parsed ``EXPORTS_SMTP_URL``; ``masked`` is the only form that may appear in a message."""

    implicit_tls: bool
    host: str
    port: int
    user: str | None
    password: str | None
    password_in_url: str | None  # the percent-encoded form, scrubbed from messages too
    starttls: str  # auto: upgrade when the server offers it; require: refuse to talk in clear
    masked: str

    def __repr__(self) -> str:
        return f"SmtpTarget({self.masked})"

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        masked = mask_url(url)
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{SMTP_URL_ENV}={masked!r} is not a valid URL: {_first_line(exc)}",
                              field=SMTP_URL_ENV) from None
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.fragment:
            raise ConfigError(f"{SMTP_URL_ENV}={masked!r} must be smtp://user:password@host:port "
                              "(STARTTLS when offered) or smtps://user:password@host:port (implicit TLS)",
                              field=SMTP_URL_ENV)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if (user is None) != (password is None):
            raise ConfigError(f"{SMTP_URL_ENV}={masked!r}: give both user and password (smtp://user:password@host) "
                              "or neither", field=SMTP_URL_ENV)
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"starttls"})
        starttls = query.get("starttls", ["auto"])[-1]
        if unknown or starttls not in _STARTTLS_MODES or (parts.scheme == "smtps" and "starttls" in query):
            raise ConfigError(f"{SMTP_URL_ENV}={masked!r}: the only query parameter is starttls=auto|require "
                              "(smtp:// only)", field=SMTP_URL_ENV)
        return cls(implicit_tls=parts.scheme == "smtps", host=parts.hostname,
                   port=port or DEFAULT_PORTS[parts.scheme], user=user, password=password,
                   password_in_url=parts.password, starttls=starttls, masked=masked)


class MailerResource(dg.ConfigurableResource):
    """SMTP delivery for batch export notices; off unless both ``smtp_url`` and ``email_from`` are set.

    Build it with ``MailerResource.from_env()`` (``EXPORTS_SMTP_URL``, ``EXPORTS_EMAIL_FROM``,
    ``EXPORTS_SMTP_CA_FILE``). ``ca_file`` is for servers whose certificate the system's CA store does
    not vouch for (a company CA, a self-signed relay): when set, it is the only trust anchor.
    """

    smtp_url: str = Field(
        default="",
        description="smtp://user:password@host:port (STARTTLS when offered; ?starttls=require insists) "
                    "or smtps://user:password@host:port (implicit TLS); user and password percent-encoded",
        json_schema_extra={"dagster__is_secret": True},
    )
    email_from: str = Field(default="", description="The From address, e.g. 'Exports <noreply@example.com>'")
    ca_file: str = Field(default="", description="PEM file of CA certificates to trust instead of the system's")
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="Bound on connecting and on each SMTP exchange (seconds)")

    def __repr__(self) -> str:  # the URL holds the password
        return (f"MailerResource(smtp_url={mask_url(self.smtp_url)!r}, email_from={self.email_from!r}, "
                f"ca_file={self.ca_file!r}, timeout_seconds={self.timeout_seconds})")

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MailerResource:
        """The mailer the environment configures; a half or invalid configuration stops the process."""
        env = os.environ if env is None else env
        mailer = cls(smtp_url=env.get(SMTP_URL_ENV, "").strip(), email_from=env.get(EMAIL_FROM_ENV, "").strip(),
                     ca_file=env.get(SMTP_CA_FILE_ENV, "").strip())
        mailer.validate_config()
        return mailer

    @property
    def enabled(self) -> bool:
        return bool(self.smtp_url.strip() and self.email_from.strip())

    def validate_config(self) -> None:
        """Raises ``ConfigError`` naming the setting when one is set without the other or is invalid."""
        if not self.smtp_url.strip() and not self.email_from.strip():
            return
        if not self.smtp_url.strip():
            raise ConfigError(f"{EMAIL_FROM_ENV} is set but {SMTP_URL_ENV} is not: set both to send e-mail",
                              field=SMTP_URL_ENV)
        if not self.email_from.strip():
            raise ConfigError(f"{SMTP_URL_ENV} is set but {EMAIL_FROM_ENV} is not: set both to send e-mail",
                              field=EMAIL_FROM_ENV)
        SmtpTarget.parse(self.smtp_url)
        _validate_from(self.email_from)
        self._tls_context()

    def send(self, to: str, subject: str, text: str, html: str | None = None) -> None:
        """Deliver one message (plain text, with an HTML alternative when given) to ``to``."""
        if not self.enabled:
            raise ConfigError(f"e-mail is off: set {SMTP_URL_ENV} and {EMAIL_FROM_ENV}", field=SMTP_URL_ENV)
        target = SmtpTarget.parse(self.smtp_url)
        message = _message(_validate_from(self.email_from), validate_email_address(to), subject, text, html)
        context = self._tls_context()
        try:
            with _session(target, context, self.timeout_seconds) as smtp:
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:  # anything else is our bug: let it fail loudly
            raise _classify(exc, target) from None
        log.info("sent e-mail %r to %s via %s", subject, message["To"], target.masked)

    def _tls_context(self) -> ssl.SSLContext:
        path = self.ca_file.strip()
        try:
            return ssl.create_default_context(cafile=path or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{SMTP_CA_FILE_ENV}={path!r} is not a readable PEM file of CA certificates "
                              f"({_first_line(exc)})", field=SMTP_CA_FILE_ENV) from None


def _message(sender: Address, to: str, subject: str, text: str, html: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


@contextlib.contextmanager
def _session(target: SmtpTarget, context: ssl.SSLContext, timeout: float) -> Iterator[smtplib.SMTP]:
    """A logged-in SMTP session: implicit TLS, or STARTTLS when offered (or required), then AUTH.

    ``timeout`` bounds the connect and every read; after a failure the socket is closed without the
    polite QUIT, which could wait out the same timeout again.
    """
    if target.implicit_tls:
        smtp = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=timeout)
    try:
        smtp.ehlo()
        if not target.implicit_tls:
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif target.starttls == "require":
                raise CustomerFault(f"sending e-mail via {target.masked} failed: the server does not offer "
                                    "STARTTLS and the URL says starttls=require", code="StartTLSRequired")
        if target.user is not None:
            smtp.login(target.user, target.password or "")
        yield smtp
    except BaseException:
        smtp.close()
        raise
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):  # the message was accepted already
        smtp.close()


# ------------------------------------------------------------------------------------------ faults


def _classify(exc: smtplib.SMTPException | OSError, target: SmtpTarget) -> ExportsError:
    """The fault an smtplib / socket / ssl error stands for, its message scrubbed of the password."""
    where = f"sending e-mail via {target.masked}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        address, (code, reply) = next(iter(exc.recipients.items()))
        text = f"{where} failed: the server refused recipient {address}: {code} {_reply(reply, target)}"
        return _by_code(code, text, hint="check the address")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"{where} failed: the server refused the login of user {target.user!r}: " \
               f"{exc.smtp_code} {_reply(exc.smtp_error, target)}"
        return _by_code(exc.smtp_code, text, hint=f"check user and password in {SMTP_URL_ENV}")
    if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data refused, bad greeting
        text = f"{where} failed: {exc.smtp_code} {_reply(exc.smtp_error, target)}"
        return _by_code(exc.smtp_code, text, hint=f"check {EMAIL_FROM_ENV} and the server's rules")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return _fault(CustomerFault, f"{where} failed: {_said(exc, target)} (the server does not offer it on "
                                     "this connection: check the port, or drop user:password from the URL)",
                      "SMTPNotSupported")
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_AGAIN,):  # the resolver is busy or unreachable: may pass
            return _fault(TransientFault, f"{where} failed: name lookup of {target.host} failed for now "
                                          f"({_said(exc, target)})", "DNSTemporary")
        return _fault(CustomerFault, f"{where} failed: the host name {target.host} does not resolve; "
                                     f"check {SMTP_URL_ENV}", "DNSNotFound")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _fault(CustomerFault, f"{where} failed: the server's certificate is not trusted "
                                     f"({_said(exc, target)}); set {SMTP_CA_FILE_ENV} to its CA",
                      "CertificateNotTrusted")
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return _fault(TransientFault, f"{where} failed: the TLS connection was dropped", "TLSDropped")
    if isinstance(exc, ssl.SSLError):
        return _fault(CustomerFault, f"{where} failed: TLS error ({_said(exc, target)}); smtps:// is implicit "
                                     "TLS (usually port 465), smtp:// upgrades with STARTTLS (usually 587)",
                      "TLSError")
    if isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(exc.__context__, TimeoutError):
        # smtplib turns a read that timed out into SMTPServerDisconnected; the context keeps the cause
        return _fault(TransientFault, f"{where} failed: no answer within the timeout", "Timeout")
    if isinstance(exc, ConnectionRefusedError):
        return _fault(TransientFault, f"{where} failed: connection refused (is the server up?)",
                      "ConnectionRefused")
    if isinstance(exc, (smtplib.SMTPServerDisconnected, OSError)):  # reset, unreachable network, EOF
        return _fault(TransientFault, f"{where} failed: {type(exc).__name__}: {_said(exc, target)}",
                      type(exc).__name__)
    # what is left is smtplib saying the server and we cannot agree (no common AUTH mechanism, ...)
    return _fault(CustomerFault, f"{where} failed: {_said(exc, target)}", type(exc).__name__)


def _by_code(code: int, text: str, *, hint: str) -> ExportsError:
    """4xx replies are the server saying "not now" (RFC 5321 §4.2.1); anything else will not change."""
    if 400 <= code < 500:
        return _fault(TransientFault, text, f"SMTP{code}")
    return _fault(CustomerFault, f"{text} ({hint})", f"SMTP{code}")


def _fault(cls: type[ExportsError], text: str, code: str) -> ExportsError:
    return cls(text[:_MESSAGE_LIMIT], code=code)


def _scrub(text: str, target: SmtpTarget) -> str:
    """Server replies and exception texts are foreign: never let the password through them."""
    for secret in (target.password, target.password_in_url):
        if secret:
            text = text.replace(secret, "***")
    return text


def _reply(reply: bytes | str, target: SmtpTarget) -> str:
    """An SMTP reply's text on one line, scrubbed."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return _scrub(" ".join(text.split()), target)


def _said(exc: BaseException, target: SmtpTarget) -> str:
    """The first line of a foreign exception's text, scrubbed."""
    return _scrub(_first_line(exc), target)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
