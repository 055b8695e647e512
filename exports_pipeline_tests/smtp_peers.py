"""A real SMTP server for the test session (aiosmtpd), with the shapes of trouble a mail relay has.

``smtp_servers(...)`` starts one on a free port of 127.0.0.1: plain, STARTTLS (required) or implicit
TLS with a self-signed certificate made here with ``cryptography`` (clients trust it through
``ca_file``), AUTH required with a user and password when given, and chosen recipients refused with
a 5xx or 4xx reply. ``smtp_server`` is the plain one. ``smtp_down_url`` points at a port nothing
listens on; ``smtp_silent_url`` at one that accepts connections and never says a word (timeouts).
Every message received is parsed into an ``EmailMessage`` (``.messages``), with its envelope and
whether it came over TLS and after which login (``.received``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
FROM = "Exports <exports@example.com>"


@dataclass(frozen=True)
class Received:
    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    login: str | None


@dataclass
class SmtpPeer:
    """One running server; ``url`` logs in with the right credentials when the server wants them."""

    tls: str  # none | starttls | implicit
    port: int
    user: str | None
    password: str | None
    ca_file: str | None
    received: list[Received] = field(default_factory=list)
    controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    @property
    def url(self) -> str:
        return self.url_for(self.user, self.password)

    def url_for(self, user: str | None, password: str | None) -> str:
        """This server's URL with the given credentials, percent-encoded as EXPORTS_SMTP_URL wants them."""
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
        return f"{scheme}://{auth}{HOST}:{self.port}"

    def mailer(self, **overrides: object):
        """A MailerResource pointed at this server, trusting its certificate."""
        from exports_pipeline.resources.mailer import MailerResource

        config = {"smtp_url": self.url, "email_from": FROM, "ca_file": self.ca_file or "", "timeout_seconds": 5.0}
        return MailerResource(**{**config, **overrides})

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class _Handler:
    """Accepts mail for anyone but the refused; keeps every message parsed."""

    def __init__(self, peer: SmtpPeer, refuse: dict[str, str]) -> None:
        self.peer, self.refuse = peer, {k.lower(): v for k, v in refuse.items()}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's hook name)
        reply = self.refuse.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        raw = envelope.original_content or envelope.content
        login = session.login_data.decode() if isinstance(session.login_data, bytes) else session.login_data
        self.peer.received.append(Received(
            message=message_from_bytes(raw, policy=policy.default), mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos), tls=server.transport.get_extra_info("ssl_object") is not None,
            login=login))
        return "250 Message accepted for delivery"


def _authenticator(user: str, password: str):
    def check(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
              and auth_data.password == password.encode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return check


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_certificate(directory: Path, host: str = HOST) -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (IP and DNS SANs) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exports test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def smtp_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key) PEM files; the certificate doubles as the CA file clients must trust."""
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_servers(smtp_certificate: tuple[Path, Path]) -> Iterator[Callable[..., SmtpPeer]]:
    """``start(tls="none"|"starttls"|"implicit", user=None, password=None, refuse={addr: reply})``."""
    peers: list[SmtpPeer] = []
    cert_path, key_path = smtp_certificate

    def start(*, tls: str = "none", user: str | None = None, password: str | None = None,
              refuse: dict[str, str] | None = None) -> SmtpPeer:
        assert tls in ("none", "starttls", "implicit"), tls
        peer = SmtpPeer(tls=tls, port=_free_port(), user=user, password=password,
                        ca_file=str(cert_path) if tls != "none" else None)
        server_tls = None
        if tls != "none":
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_tls.load_cert_chain(cert_path, key_path)
        smtp_kwargs: dict[str, object] = {}
        if user is not None:
            # aiosmtpd's auth_require_tls knows STARTTLS only; under implicit TLS every byte is encrypted
            smtp_kwargs.update(authenticator=_authenticator(user, password or ""), auth_required=True,
                               auth_require_tls=tls == "starttls")
        if tls == "starttls":
            smtp_kwargs.update(tls_context=server_tls, require_starttls=True)
        controller = Controller(_Handler(peer, refuse or {}), hostname=HOST, port=peer.port,
                                ssl_context=server_tls if tls == "implicit" else None, **smtp_kwargs)
        controller.start()
        peer.controller = controller
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


@pytest.fixture
def smtp_server(smtp_servers: Callable[..., SmtpPeer]) -> SmtpPeer:
    """A plain SMTP server without AUTH (what a local relay looks like)."""
    return smtp_servers()


@pytest.fixture
def smtp_down_url() -> str:
    """An SMTP URL whose port nothing listens on: connection refused."""
    return f"smtp://{HOST}:{_free_port()}"


@pytest.fixture
def smtp_silent_url() -> Iterator[str]:
    """An SMTP URL whose server accepts the TCP connection and never greets: the client must time out."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield f"smtp://{HOST}:{listener.getsockname()[1]}"
