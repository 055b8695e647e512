"""Dagster objects, one module per capability; `exports_pipeline.definitions` wires them."""
