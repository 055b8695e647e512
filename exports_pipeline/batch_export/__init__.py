"""Batch export: a filtered one-off export to a download."""
