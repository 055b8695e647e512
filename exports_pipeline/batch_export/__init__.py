"""Batch export (issue 8): a filtered one-off export of a project's events to one downloadable file.

Follow a request: `request` (validated, stored QUEUED) -> `defs` (the sensor launches the `batch_export`
job) -> `runner` (claim, count, ClickHouse writes the file, link) -> `notify` (`mail`). `filters` turns
Langfuse's filter JSON and search into validated conditions; `query` turns a validated request
(`BatchQuery`) into bound ClickHouse SQL with Langfuse's `BatchExportEventsRow` columns. `faults` says
what a failure means and what to do; `retention` deletes old files.
"""
