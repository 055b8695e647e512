"""`exports-pipeline batch-export` in process over the seeded chDB events, a SQLite state DB and a local
destination: create validates before storing, --run goes through the batch_export job, show/list/url/cancel
say what happened, --wait says plainly when no daemon picks the request up."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from exports_pipeline.cli import main
from exports_pipeline.commands import batch_export as command
from exports_pipeline.commands import open_state
from exports_pipeline.settings import get_settings
from exports_pipeline.state.store import StateStore

FILTER = [{"column": "type", "type": "stringOptions", "operator": "any of", "value": ["GENERATION"]},
          {"column": "totalCost", "type": "number", "operator": ">", "value": 0}]


@pytest.fixture
def env(seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXPORTS_CLICKHOUSE_URL", seeded.url)
    monkeypatch.setenv("EXPORTS_EVENTS_TABLE", seeded.events_table)
    monkeypatch.setenv("EXPORTS_BATCH_EXPORT_ROW_LIMIT", "1000")
    for name in ("EXPORTS_DATABASE_URL", "EXPORTS_BATCH_EXPORT_DESTINATION", "DAGSTER_HOME", "EXPORTS_SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path / "home"
    StateStore(database_url=get_settings().database_url).dispose()
    get_settings.cache_clear()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_run_show_url_list(env, capsys, tmp_path):
    path = tmp_path / "filter.json"
    path.write_text(json.dumps(FILTER))
    code, out, err = run(capsys, "batch-export", "create", "--project", "proj-1", "--format", "csv",
                         "--filter-file", str(path), "--limit", "40", "--name", "gens with cost", "--run")
    assert code == 0, err
    export_id = out.splitlines()[0]
    state = open_state(get_settings())
    export = state.get_batch_export(export_id)
    assert export.status == "COMPLETED" and export.rows_written == 40 and export.truncated
    assert "truncated     yes:" in out and "rows written  40" in out
    file = Path(export.url)
    assert file.is_file() and str(env / "batch-exports") in str(file) and "gens-with-cost" in file.name
    assert f"get it: {file}" in out

    code, out, _ = run(capsys, "batch-export", "show", export_id)
    assert code == 0 and "status        COMPLETED" in out and f"file          {export.object_uri}" in out
    code, out, _ = run(capsys, "batch-export", "url", export_id)
    assert code == 0 and out.strip() == str(file)
    code, out, _ = run(capsys, "batch-export", "list", "--project", "proj-1")
    assert code == 0 and export_id in out and "COMPLETED" in out
    assert "no batch exports" in run(capsys, "batch-export", "list", "--status", "QUEUED")[1]


def test_create_refuses_bad_input_and_stores_nothing(env, capsys):
    bad = [
        (["--filter", '[{"column":"scores","type":"number","operator":">","value":1}]'], "--filter: filter condition #1"),
        (["--filter", "[{"], "--filter: filter is not valid JSON"),
        (["--limit", "5000"], "--limit: 5,000 is above"),
        (["--email", "bob@gmail"], "--email"),
        (["--order-by", "nope:desc"], "--order-by"),
        (["--columns", "id,,name"], "--columns"),
        (["--search", "x", "--search-type", "id", "--compression", "gzip", "--format", "parquet"], "--compression"),
    ]
    for extra, message in bad:
        argv = ["batch-export", "create", "--project", "proj-1", "--format", "csv", *extra]
        code, out, err = run(capsys, *argv)
        assert code == 2 and message in err, (extra, err)
        assert out == ""
    assert open_state(get_settings()).list_batch_exports() == []


def test_expired_link_says_so_and_queued_cancel_never_runs(env, capsys):
    code, out, _ = run(capsys, "batch-export", "create", "--project", "proj-2", "--format", "jsonl", "--limit", "3",
                       "--run")
    export_id = out.splitlines()[0]
    state = open_state(get_settings())
    with state._write() as conn:  # the link's 24 hours have passed
        import sqlalchemy as sa

        from exports_pipeline.state import tables as t

        conn.execute(sa.update(t.batch_exports).where(t.batch_exports.c.id == export_id)
                     .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    code, _, err = run(capsys, "batch-export", "url", export_id)
    assert code == 1 and "expired" in err
    assert "(expired)" in run(capsys, "batch-export", "show", export_id)[1]

    code, out, _ = run(capsys, "batch-export", "create", "--project", "proj-2", "--format", "csv")
    queued = out.strip()
    code, out, _ = run(capsys, "batch-export", "cancel", queued)
    assert code == 0 and "cancelled before it ran" in out
    assert state.get_batch_export(queued).status == "CANCELLED"
    assert run(capsys, "batch-export", "url", queued)[0] == 1


def test_wait_says_plainly_when_no_daemon_picks_it_up(env, capsys, monkeypatch):
    monkeypatch.setattr(command, "PICKUP_TIMEOUT_SECONDS", 1)
    monkeypatch.setattr(command, "POLL_SECONDS", 0.1)
    code, out, err = run(capsys, "batch-export", "create", "--project", "proj-1", "--format", "csv", "--wait")
    assert code == 3 and "no Dagster daemon started batch export" in err and "stays QUEUED" in err
    assert open_state(get_settings()).get_batch_export(out.strip()).status == "QUEUED"
