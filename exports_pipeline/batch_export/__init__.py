"""Batch export (issue 8): a filtered one-off export of a project's events to one downloadable file.

`filters` turns Langfuse's filter JSON and search into validated conditions; `query` turns a validated
request (`BatchQuery`) into bound ClickHouse SQL with Langfuse's `BatchExportEventsRow` columns.
"""
