"""Check an integration against Mixpanel without importing anything.

Mixpanel has no credential-check endpoint for `/import`, so we send one event it must refuse: `time` in
1970, which `/import` rejects ("We will reject events with time values that are before 1971-01-01",
docs.mixpanel.com/reference/import-events, "properties.time"). Credentials and project are checked before
the events (a wrong token is a 401, a service account without access a 403), and under `strict=1` the
refusal comes back as a 400 naming `properties.time` with `num_records_imported: 0`. That answer is the pass:
the endpoint is Mixpanel's strict `/import`, it accepted who we are, and nothing landed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from exports_pipeline.errors import ExportsError
from exports_pipeline.resources.mixpanel import MixpanelClient
from exports_pipeline.sinks.mixpanel.mapping import EVENT_NAME, insert_id

PROBE_TIME_MS = 1_000  # 1970-01-01T00:00:01Z: refused by /import, so never imported


@dataclass(frozen=True)
class Validation:
    ok: bool
    message: str


def probe_line(project_id: str) -> bytes:
    return json.dumps({"event": EVENT_NAME, "properties": {
        "time": PROBE_TIME_MS, "distinct_id": "", "$insert_id": insert_id(project_id, "exports-pipeline-validate"),
        "ip": 0, "langfuse_validate": True}}, separators=(",", ":")).encode()


def validate(client: MixpanelClient, project_id: str) -> Validation:
    where = client.masked_url
    try:
        totals = client.validate(probe_line(project_id))
    except ExportsError as exc:
        return Validation(False, f"{exc.code or type(exc).__name__}: {exc}")
    fields = {r.field for r in totals.failed_samples}
    if totals.failed and totals.imported == 0 and fields <= {"properties.time"}:
        return Validation(True, f"{where} accepted the credentials and refused the 1970 probe event as intended "
                                "(properties.time): nothing was imported")
    if totals.imported:
        return Validation(False, f"{where} imported a probe event dated 1970: this is not Mixpanel's strict "
                                 "/import (check --endpoint)")
    return Validation(False, f"{where} refused the probe for another reason: "
                             + "; ".join(str(r) for r in totals.failed_samples))
