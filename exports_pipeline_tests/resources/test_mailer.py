"""MailerResource against a real SMTP server (aiosmtpd): plain, STARTTLS, smtps, AUTH, refusals, outages.

Every fault test reads the error the way a run would store it (``str``, ``repr``, the formatted
traceback) and the logs, and checks that the password appears in none of them, in either its
decoded or its percent-encoded form.
"""

from __future__ import annotations

import logging
import time
import traceback

import pytest

from exports_pipeline.errors import ConfigError, CustomerFault, TransientFault
from exports_pipeline.resources.mailer import MailerResource, SmtpTarget, validate_email_address
from exports_pipeline_tests.smtp_peers import FROM

USER = "exports@relay"
PASSWORD = "Pw/with:odd@chars%and space"  # every character that needs percent-encoding in a URL
ENCODED = "Pw%2Fwith%3Aodd%40chars%25and%20space"
CREDENTIALS = f"exports%40relay:{ENCODED}"  # USER:PASSWORD as they stand in EXPORTS_SMTP_URL
TO = "Alice Analyst <alice@example.com>"


def _leaks(*texts: str) -> list[str]:
    return [t for t in texts if PASSWORD in t or ENCODED in t]


def _error_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def _client_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What our side logged (aiosmtpd's own server log, `mail.log`, is the test peer's, not ours)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))


def test_plain_server_receives_text_and_html(smtp_server) -> None:
    mailer = smtp_server.mailer()
    assert mailer.enabled
    mailer.send("alice@example.com", "Your data export is ready", "plain body", "<p>html &amp; body</p>")

    [got] = smtp_server.received
    assert got.rcpt_tos == ["alice@example.com"] and got.mail_from == "exports@example.com"
    assert not got.tls and got.login is None
    message = got.message
    assert message["Subject"] == "Your data export is ready"
    assert message["From"] == FROM and message["To"] == "alice@example.com"
    assert message["Auto-Submitted"] == "auto-generated" and message["Message-ID"].endswith("@example.com>")
    assert message.get_body(("plain",)).get_content().strip() == "plain body"
    assert message.get_body(("html",)).get_content().strip() == "<p>html &amp; body</p>"


def test_starttls_with_auth_and_a_percent_encoded_password(smtp_servers, caplog) -> None:
    """The server refuses mail before STARTTLS and AUTH before TLS: delivery proves both happened."""
    caplog.set_level(logging.DEBUG)
    peer = smtp_servers(tls="starttls", user=USER, password=PASSWORD)
    assert ENCODED in peer.url
    peer.mailer().send("alice@example.com", "s", "t")
    [got] = peer.received
    assert got.tls and got.login == USER
    assert _leaks(_client_logs(caplog)) == []


def test_starttls_required_by_url_against_a_server_without_it(smtp_server) -> None:
    with pytest.raises(CustomerFault, match="does not offer STARTTLS"):
        smtp_server.mailer(smtp_url=smtp_server.url + "?starttls=require").send("alice@example.com", "s", "t")
    assert smtp_server.received == []


def test_smtps_implicit_tls_with_auth(smtp_servers) -> None:
    peer = smtp_servers(tls="implicit", user=USER, password=PASSWORD)
    assert peer.url.startswith("smtps://")
    peer.mailer().send("alice@example.com", "s", "t")
    [got] = peer.received
    assert got.tls and got.login == USER


def test_untrusted_certificate_is_the_customers_and_names_the_ca_setting(smtp_servers) -> None:
    peer = smtp_servers(tls="starttls")
    with pytest.raises(CustomerFault, match="EXPORTS_SMTP_CA_FILE") as info:
        peer.mailer(ca_file="").send("alice@example.com", "s", "t")
    assert info.value.code == "CertificateNotTrusted"


def test_auth_failure_is_the_customers_and_never_shows_the_password(smtp_servers, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    peer = smtp_servers(tls="starttls", user=USER, password="the-right-one")
    mailer = peer.mailer(smtp_url=peer.url_for(USER, PASSWORD))
    with pytest.raises(CustomerFault) as info:
        mailer.send("alice@example.com", "s", "t")
    exc = info.value
    assert exc.code == "SMTP535" and "refused the login" in str(exc) and "EXPORTS_SMTP_URL" in str(exc)
    assert ":***@" in str(exc)
    out = capsys.readouterr()
    assert _leaks(*_error_texts(exc), _client_logs(caplog), out.out, out.err, repr(mailer), str(mailer)) == []
    assert peer.received == []


def test_server_down_is_transient_and_masked(smtp_down_url) -> None:
    url = smtp_down_url.replace("smtp://", f"smtp://{CREDENTIALS}@")
    with pytest.raises(TransientFault, match="connection refused") as info:
        MailerResource(smtp_url=url, email_from=FROM, timeout_seconds=2).send("alice@example.com", "s", "t")
    assert info.value.code == "ConnectionRefused"
    assert _leaks(*_error_texts(info.value)) == []


def test_silent_server_times_out_within_the_bound(smtp_silent_url) -> None:
    started = time.monotonic()
    with pytest.raises(TransientFault, match="timeout") as info:
        MailerResource(smtp_url=smtp_silent_url, email_from=FROM, timeout_seconds=0.5).send("alice@example.com", "s", "t")
    assert info.value.code == "Timeout"
    assert time.monotonic() - started < 3


def test_recipient_refused_5xx_is_the_customers_4xx_transient(smtp_servers) -> None:
    peer = smtp_servers(refuse={"gone@example.com": "550 5.1.1 <gone@example.com>: mailbox unavailable",
                                "busy@example.com": "450 4.2.1 mailbox busy, try later"})
    with pytest.raises(CustomerFault, match="refused recipient gone@example.com: 550") as info:
        peer.mailer().send("gone@example.com", "s", "t")
    assert info.value.code == "SMTP550"
    with pytest.raises(TransientFault, match="refused recipient busy@example.com: 450"):
        peer.mailer().send("busy@example.com", "s", "t")
    assert peer.received == []


def test_server_reply_echoing_the_password_is_scrubbed(smtp_servers) -> None:
    """Server text is foreign: a relay that quotes the credentials back must not put them in our message."""
    peer = smtp_servers(tls="starttls", user=USER, password=PASSWORD,
                        refuse={"gone@example.com": f"550 5.1.1 no mailbox (session {ENCODED} / {PASSWORD})"})
    with pytest.raises(CustomerFault, match="refused recipient gone@example.com: 550") as info:
        peer.mailer().send("gone@example.com", "s", "t")
    assert "(session *** / ***)" in str(info.value)
    assert _leaks(*_error_texts(info.value)) == []


def test_host_that_does_not_resolve_is_the_customers() -> None:
    mailer = MailerResource(smtp_url=f"smtp://{CREDENTIALS}@no-such-host.invalid:587", email_from=FROM,
                            timeout_seconds=2)
    with pytest.raises(CustomerFault, match="does not resolve") as info:
        mailer.send("alice@example.com", "s", "t")
    assert info.value.code == "DNSNotFound" and _leaks(*_error_texts(info.value)) == []


@pytest.mark.parametrize("url", [
    "http://{cred}@relay.example.com", "smtp://", "smtp://{cred}@relay.example.com/path",
    "smtp://exports%40relay@relay.example.com", "smtp://:{password}@relay.example.com",
    "smtp://{cred}@relay.example.com:99999", "smtp://{cred}@relay.example.com?starttls=maybe",
    "smtps://{cred}@relay.example.com?starttls=require", "smtp://{cred}@relay.example.com?timeout=3",
])
def test_bad_urls_name_the_setting_and_hide_the_password(url: str) -> None:
    url = url.format(cred=CREDENTIALS, password=ENCODED)
    with pytest.raises(ConfigError) as info:
        MailerResource(smtp_url=url, email_from=FROM).validate_config()
    assert info.value.field == "EXPORTS_SMTP_URL" and "EXPORTS_SMTP_URL" in str(info.value)
    assert _leaks(str(info.value)) == []


def test_url_forms() -> None:
    target = SmtpTarget.parse(f"smtps://{CREDENTIALS}@relay.example.com")
    assert (target.implicit_tls, target.port, target.user, target.password) == (True, 465, USER, PASSWORD)
    assert PASSWORD not in repr(target) and ENCODED not in repr(target)
    plain = SmtpTarget.parse("smtp://relay.example.com?starttls=require")
    assert (plain.implicit_tls, plain.port, plain.user, plain.starttls) == (False, 587, None, "require")


@pytest.mark.parametrize("addr", ["", "alice", "alice@", "@example.com", "alice@example", "a b@example.com",
                                  "Alice <alice@example.com>", "alice@example.com, bob@example.com",
                                  "alice@example.com\r\nBcc: eve@example.com", "alice@-bad-.com",
                                  "alice@example..com", "ålice@example.com"])
def test_bad_recipient_addresses_are_refused_naming_the_flag(addr: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_email_address(addr)
    assert info.value.field == "--email" and "--email" in str(info.value)


def test_good_recipient_addresses() -> None:
    assert validate_email_address("  alice.o'neil+exports@sub.example.co.uk ") == "alice.o'neil+exports@sub.example.co.uk"
    assert validate_email_address('"quoted name"@example.com') == '"quoted name"@example.com'
    assert validate_email_address("alice@bücher.de") == "alice@xn--bcher-kva.de"
    assert validate_email_address("alice@[192.0.2.1]") == "alice@[192.0.2.1]"


def test_configuration_must_be_whole() -> None:
    assert not MailerResource().enabled
    MailerResource().validate_config()  # off is a valid configuration
    assert not MailerResource.from_env({}).enabled
    with pytest.raises(ConfigError) as info:
        MailerResource.from_env({"EXPORTS_SMTP_URL": "smtp://relay.example.com"})
    assert info.value.field == "EXPORTS_EMAIL_FROM"
    with pytest.raises(ConfigError) as info:
        MailerResource.from_env({"EXPORTS_EMAIL_FROM": FROM})
    assert info.value.field == "EXPORTS_SMTP_URL"
    for bad_from in ("not an address", "a@example.com, b@example.com", "Exports <exports@>"):
        with pytest.raises(ConfigError) as info:
            MailerResource(smtp_url="smtp://relay.example.com", email_from=bad_from).validate_config()
        assert info.value.field == "EXPORTS_EMAIL_FROM"
    with pytest.raises(ConfigError) as info:
        MailerResource.from_env({"EXPORTS_SMTP_URL": "smtp://relay.example.com", "EXPORTS_EMAIL_FROM": FROM,
                                 "EXPORTS_SMTP_CA_FILE": "/nonexistent/ca.pem"})
    assert info.value.field == "EXPORTS_SMTP_CA_FILE"
    mailer = MailerResource.from_env({"EXPORTS_SMTP_URL": f"smtp://{CREDENTIALS}@relay.example.com",
                                      "EXPORTS_EMAIL_FROM": FROM})
    assert mailer.enabled and _leaks(repr(mailer)) == []


def test_works_as_a_dagster_resource(smtp_server) -> None:
    """Config round-trips through Dagster (the URL is a secret field) and an asset can send with it."""
    import dagster as dg

    @dg.asset
    def notify(mailer: MailerResource) -> None:
        mailer.send("alice@example.com", "from an asset", "body")

    result = dg.materialize([notify], resources={"mailer": smtp_server.mailer()})
    assert result.success
    assert [m["Subject"] for m in smtp_server.messages] == ["from an asset"]
