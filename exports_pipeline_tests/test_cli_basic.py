"""`exports-pipeline seed` and `db upgrade` as a user runs them (separate process, real chDB/SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys


def run(args, home, **env):
    return subprocess.run([sys.executable, "-m", "exports_pipeline.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "EXPORTS_HOME": str(home), **env}, timeout=600)


def test_seed_creates_table_prints_rate_and_refuses_to_double(tmp_path):
    out = run(["seed", "--projects", "2", "--days", "1", "--events-per-day", "3000", "--start", "2026-01-05"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "rows/s" in out.stdout and "for 2 projects over 1 days" in out.stdout
    again = run(["seed", "--projects", "2", "--days", "1", "--events-per-day", "3000", "--start", "2026-01-05"], tmp_path)
    assert again.returncode == 2 and "already" in again.stderr


def test_seed_bad_arguments_are_named(tmp_path):
    out = run(["seed", "--projects", "0", "--days", "1", "--events-per-day", "10"], tmp_path)
    assert out.returncode == 2 and "--projects" in out.stderr
    out = run(["seed", "--projects", "1", "--days", "1", "--events-per-day", "10", "--start", "01/02/2026"], tmp_path)
    assert out.returncode == 2 and "YYYY-MM-DD" in out.stderr


def test_db_upgrade_and_bad_settings(tmp_path):
    out = run(["db", "upgrade"], tmp_path)
    assert out.returncode == 0 and "revision" in out.stdout
    assert (tmp_path / "state.db").exists()
    bad = run(["db", "upgrade"], tmp_path, EXPORTS_DATABASE_URL="postgresql://u:hunter2@h/db")
    assert bad.returncode == 2 and "EXPORTS_DATABASE_URL" in bad.stderr and "hunter2" not in bad.stderr
