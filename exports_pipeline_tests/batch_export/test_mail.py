"""The batch export mails as a real SMTP server receives them (aiosmtpd), text and HTML both read back."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

from exports_pipeline.batch_export.mail import BatchExportSummary, failed_message, ready_message

# A presigned GET: `&` between parameters must survive as a link, and the name carries markup.
URL = ("https://bucket.s3.example.com/batch-exports/proj-1/bx-1/export.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
       "&X-Amz-Expires=86400&response-content-disposition=attachment%3B%20filename%3D%22export.csv%22")
HOSTILE = '<script>alert("x")</script> & "gold" users'


def _summary(**overrides) -> BatchExportSummary:
    base = dict(export_id="bx-1", name=HOSTILE, project_id="proj-1", format="csv", rows_written=1_500_000,
                rows_matched=2_345_678, truncated=True, bytes=734_003_200, url=URL,
                expires_at=dt.datetime(2026, 11, 20, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    return BatchExportSummary(**{**base, **overrides})


class _Page(HTMLParser):
    """The visible text and the hrefs of an HTML body, as a mail client would read them."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [value for name, value in attrs if name == "href"]

    def handle_data(self, data):
        self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def _send_and_receive(smtp_server, subject: str, text: str, markup: str):
    smtp_server.mailer().send("alice@example.com", subject, text, markup)
    [message] = smtp_server.messages
    return message, message.get_body(("plain",)).get_content(), _Page(message.get_body(("html",)).get_content())


def test_ready_mail_received_has_link_rows_size_expiry_and_truncation(smtp_server) -> None:
    message, text, page = _send_and_receive(smtp_server, *ready_message(_summary()))

    assert message["Subject"] == "Your data export is ready"
    truncation = ("The export was limited to 1,500,000 of 2,345,678 matching rows; the other 845,678 rows "
                  "are not in the file.")
    assert "Rows: 1,500,000" in text and "Rows 1,500,000" in page.visible
    for body in (text, page.visible):
        assert "700.0 MiB (734,003,200 bytes)" in body
        assert "2026-11-20 10:30 UTC" in body  # 11:30 at +01:00, told in UTC
        assert truncation in body
        assert HOSTILE in body and "proj-1" in body and "bx-1" in body
    assert f"Download: {URL}" in text
    assert page.hrefs == [URL]  # the presigned URL intact through HTML escaping
    assert "script" not in page.tags  # the name is text, never markup


def test_ready_mail_without_truncation_says_nothing_of_a_limit() -> None:
    subject, text, markup = ready_message(_summary(truncated=False, rows_written=42, rows_matched=42, bytes=512))
    assert subject == "Your data export is ready"
    assert "limited" not in text and "limited" not in markup
    assert "Rows: 42" in text and "Size: 512 bytes" in text


def test_truncation_without_a_matched_count_still_says_so() -> None:
    _, text, _ = ready_message(_summary(rows_matched=None))
    assert "The export was limited to 1,500,000 rows; more rows matched the filter and are not in the file." in text


def test_local_file_is_shown_not_linked_and_other_schemes_never_reach_an_href() -> None:
    _, text, markup = ready_message(_summary(url="/data/exports/batch-exports/proj-1/bx-1.csv"))
    assert "File: /data/exports/batch-exports/proj-1/bx-1.csv" in text
    assert _Page(markup).hrefs == []
    _, text, markup = ready_message(_summary(url='javascript:alert("x")'))
    assert _Page(markup).hrefs == []


def test_naive_expiry_is_utc() -> None:
    _, text, _ = ready_message(_summary(expires_at=dt.datetime(2026, 11, 20, 10, 0)))
    assert "Link valid until: 2026-11-20 10:00 UTC" in text


def test_failed_mail_received_has_the_reason_escaped(smtp_server) -> None:
    reason = ("Access denied to s3://bucket/batch-exports/ (AccessDenied): give the export role s3:PutObject "
              "on <bucket>/batch-exports/*")
    message, text, page = _send_and_receive(smtp_server, *failed_message(_summary(message=reason, url=None)))
    assert message["Subject"] == "Your data export failed"
    assert f"Reason: {reason}" in text and f"Reason: {reason}" in page.visible
    assert page.hrefs == [] and "bucket" not in page.tags
    assert HOSTILE in page.visible and "script" not in page.tags


def test_failed_mail_without_a_reason_says_none_was_recorded() -> None:
    _, text, _ = failed_message(_summary(message=None))
    assert "Reason: no reason was recorded" in text


def test_summary_repr_hides_the_presigned_url() -> None:
    assert URL not in repr(_summary())
