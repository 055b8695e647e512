"""The two e-mails of a batch export: ready (the link and what it holds) and failed (the reason).

Langfuse's mail carries a link and nothing else, and its row limit cuts a file silently
(langfuse-exports §2.2, §10). Here the ready mail says how many rows, how big, until when the link
works and, when the row limit cut the file, in words, how many rows matched and that the rest are
not in it. Each mail comes as plain text and as HTML that escapes every value it shows: names,
reasons and the presigned URL (whose ``&`` separators must be ``&amp;`` in an attribute).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from exports_pipeline.resources.object_store.sizing import human_bytes

READY_SUBJECT = "Your data export is ready"
FAILED_SUBJECT = "Your data export failed"
_FORMATS = {"csv": "CSV", "json": "JSON", "jsonl": "JSONL", "parquet": "Parquet"}


@dataclass(frozen=True)
class BatchExportSummary:
    """What the mails need of one export; ``message`` is the failure's reason (what to do included)."""

    export_id: str
    name: str | None
    project_id: str
    format: str
    rows_written: int = 0
    rows_matched: int | None = None
    truncated: bool = False
    bytes: int = 0
    url: str | None = field(default=None, repr=False)  # presigned: a bearer credential until it expires
    expires_at: dt.datetime | None = None
    message: str | None = None


def ready_message(summary: BatchExportSummary) -> tuple[str, str, str]:
    """(subject, text, html) of the mail that hands over the file."""
    facts = [("Rows", f"{summary.rows_written:,}"), ("Size", human_bytes(summary.bytes)),
             ("Format", _FORMATS.get(summary.format, summary.format))]
    if summary.expires_at is not None:
        facts.append(("Link valid until", utc_text(summary.expires_at)))
    link = summary.url if summary.url and _is_web_link(summary.url) else None
    where = None if link else summary.url  # a local destination: the file's path
    notes = [truncation_text(summary)] if summary.truncated else []

    text = [f"{_title(summary)} is ready.", ""]
    if link:
        text += [f"Download: {link}", ""]
    elif where:
        text += [f"File: {where}", ""]
    text += [f"{label}: {value}" for label, value in facts]
    text += [line for note in notes for line in ("", note)]
    text += ["", f"Export id: {summary.export_id}"]

    body = [f"<p>{_e(_title(summary))} is ready.</p>"]
    if link:
        body.append(f'<p><a href="{_e(link)}">Download the export</a></p>')
    elif where:
        body.append(f"<p>File: <code>{_e(where)}</code></p>")
    body.append("<table>" + "".join(f"<tr><th align=\"left\">{_e(label)}</th><td>{_e(value)}</td></tr>"
                                    for label, value in facts) + "</table>")
    body += [f"<p><strong>{_e(note)}</strong></p>" for note in notes]
    body.append(f"<p>Export id: <code>{_e(summary.export_id)}</code></p>")
    return READY_SUBJECT, "\n".join(text) + "\n", _document(body)


def failed_message(summary: BatchExportSummary) -> tuple[str, str, str]:
    """(subject, text, html) of the mail that says the export failed and why."""
    reason = (summary.message or "").strip() or "no reason was recorded; ask the operator to look at the run"
    after = "No file was kept. Request the export again once the cause is fixed."
    text = [f"{_title(summary)} failed.", "", f"Reason: {reason}", "", after, "",
            f"Export id: {summary.export_id}"]
    body = [f"<p>{_e(_title(summary))} failed.</p>", f"<p>Reason: {_e(reason)}</p>", f"<p>{_e(after)}</p>",
            f"<p>Export id: <code>{_e(summary.export_id)}</code></p>"]
    return FAILED_SUBJECT, "\n".join(text) + "\n", _document(body)


def truncation_text(summary: BatchExportSummary) -> str:
    """The row limit's cut in words (also fit for ``show`` and the run metadata)."""
    written = summary.rows_written
    if summary.rows_matched is None or summary.rows_matched <= written:
        return (f"The export was limited to {written:,} rows; more rows matched the filter and are not in "
                "the file. Narrow the filter or the time range to export the rest.")
    rest = summary.rows_matched - written
    return (f"The export was limited to {written:,} of {summary.rows_matched:,} matching rows; the other "
            f"{rest:,} rows are not in the file. Narrow the filter or the time range to export the rest.")


def utc_text(value: dt.datetime) -> str:
    """``2026-11-20 10:00 UTC``: a naive value is UTC, as everywhere in the pipeline."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _title(summary: BatchExportSummary) -> str:
    name = (summary.name or "").strip()
    named = f' "{name}"' if name else ""
    return f"Your data export{named} of project {summary.project_id}"


def _is_web_link(url: str) -> bool:
    """Only http(s) becomes a link: a path is shown as text, and no other scheme reaches an href."""
    return urlsplit(url).scheme in ("http", "https")


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _document(body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
