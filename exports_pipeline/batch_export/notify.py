"""The mail to the person who asked: sent when the request has an address and SMTP is configured.

A mail that cannot be sent does not fail the export: the reason becomes a warning on the run and a note
in the row's `message`, and the file and its link stay as they are.
"""

from __future__ import annotations

from exports_pipeline.errors import ExportsError
from exports_pipeline.state.models import BatchExport


def notify(mailer, state, export: BatchExport) -> str | None:
    """Send the ready or failed mail for a finished export; returns a warning when it could not be sent."""
    if not export.email or mailer is None or not mailer.enabled or export.status not in ("COMPLETED", "FAILED"):
        return None
    from exports_pipeline.batch_export.mail import failed_message, ready_message
    from exports_pipeline.batch_export.runner import summary

    subject, text, html = (ready_message if export.status == "COMPLETED" else failed_message)(summary(export))
    try:
        mailer.send(export.email, subject, text, html)
    except ExportsError as exc:
        warning = f"the e-mail to {export.email} could not be sent: {exc}"
        state.add_batch_export_message(export.id, warning)
        return warning
    return None
