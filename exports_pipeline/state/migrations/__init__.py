"""Alembic environment; a package so that setuptools ships env.py with the code."""
