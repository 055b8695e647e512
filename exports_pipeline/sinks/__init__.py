"""Windowed sinks: one folder each (plug-in + Dagster objects)."""
