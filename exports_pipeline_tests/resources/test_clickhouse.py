"""ClickHouseResource on chDB and over HTTP: binding, settings, tags, errors, streaming, process turns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from exports_pipeline.errors import DeploymentFault
from exports_pipeline.resources.clickhouse import (
    ClickHouseDeploymentFault,
    ClickHouseError,
    ClickHouseResource,
    embedded_engine,
    settings_clause,
)

HARD = "a'b\"c\\d,e\nf\tg 🚀 中文 {x:String}"


@pytest.fixture(params=["chdb", "http"])
def clickhouse(request, chdb_url) -> ClickHouseResource:
    """The resource once in-process (chDB) and once over HTTP (with a password in the URL)."""
    if request.param == "chdb":
        return ClickHouseResource(url=chdb_url)
    return ClickHouseResource(url=request.getfixturevalue("ch_http_url"))


def test_values_are_bound_server_side_never_pasted(clickhouse):
    rows = clickhouse.query("SELECT {v:String} AS v, lengthUTF8({v:String})", {"v": HARD})
    assert rows == [(HARD, len(HARD))]


def test_query_settings_go_into_the_sql_settings_clause(clickhouse):
    rows = clickhouse.query("SELECT getSetting('max_block_size')", settings={"max_block_size": 1234})
    assert int(rows[0][0]) == 1234
    assert settings_clause({"a": 1, "b": "x'y"}) == " SETTINGS a = 1, b = 'x\\'y'"
    with pytest.raises(ValueError, match="setting name"):
        settings_clause({"bad name": 1})


def test_stream_csv_and_jsoneachrow_with_hard_text(clickhouse):
    sql = "SELECT number AS n, {v:String} AS s FROM numbers(3)"
    with clickhouse.stream(sql, "JSONEachRow", {"v": HARD}) as chunks:
        lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"n": i, "s": HARD} for i in range(3)]
    import csv
    import io

    with clickhouse.stream(sql, "CSV", {"v": HARD}) as chunks:
        rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert rows == [[str(i), HARD] for i in range(3)]


def test_arrow_batches_are_bounded_batches_of_the_whole_result(clickhouse):
    with clickhouse.arrow_batches("SELECT number FROM numbers({n:UInt64})", {"n": 250_000}, rows_per_batch=50_000) as it:
        batches = list(it)
    assert sum(b.num_rows for b in batches) == 250_000
    assert len(batches) > 1
    assert sorted(x for b in batches for x in b.column(0).to_pylist()) == list(range(250_000))


def test_export_to_file_parquet(clickhouse, tmp_path):
    import pyarrow.parquet as pq

    path = str(tmp_path / "out.parquet")
    size = clickhouse.export_to_file("SELECT number AS n, {v:String} AS s FROM numbers(1000)", "Parquet", path, {"v": HARD})
    assert size == os.path.getsize(path) > 0
    table = pq.read_table(path)
    assert table.num_rows == 1000 and table.column("s")[0].as_py() == HARD


def test_embedded_refuses_to_stream_buffered_formats(chdb_url):
    with pytest.raises(ValueError, match="does not stream"):
        with ClickHouseResource(url=chdb_url).stream("SELECT 1", "Parquet") as chunks:
            list(chunks)


def test_query_errors_are_clickhouse_errors_naming_the_masked_url(clickhouse):
    with pytest.raises(ClickHouseError) as err:
        clickhouse.query("SELECT no_such_column")
    assert "no_such_column" in str(err.value)
    assert "s3cr3t-pw" not in str(err.value)


@pytest.mark.parametrize("sql, what", [("SELECT count() FROM no_such_table", "no_such_table"),
                                       ("SELECT start_time FROM numbers(1)", "start_time"),
                                       ("SELECT number + 'x' FROM numbers(1)", "Illegal types")])
def test_a_table_column_or_type_clickhouse_lacks_is_a_deployment_fault(clickhouse, sql, what):
    """The same answer on every retry, and no customer can fix it: the deployment's, naming its setting."""
    with pytest.raises(ClickHouseDeploymentFault) as err:
        clickhouse.query(sql)
    assert isinstance(err.value, DeploymentFault) and isinstance(err.value, ClickHouseError)
    assert err.value.setting == "EXPORTS_EVENTS_TABLE" and what in str(err.value)
    assert "EXPORTS_EVENTS_TABLE=events_full" in str(err.value) and "s3cr3t-pw" not in str(err.value)


def test_an_overloaded_or_unreachable_clickhouse_is_not_a_deployment_fault(ch_http_url, chdb_http):
    """503 and refused connections are transient: plain ClickHouseErrors, which the step retries."""
    chdb_http.state.fail_next = 1
    with pytest.raises(ClickHouseError) as err:
        ClickHouseResource(url=ch_http_url).query("SELECT 1")
    assert not isinstance(err.value, DeploymentFault)
    with pytest.raises(ClickHouseError) as err:
        ClickHouseResource(url="http://reader:pw@127.0.0.1:9/db", connect_timeout=2).query("SELECT 1")
    assert not isinstance(err.value, DeploymentFault)


def test_connection_failure_names_the_url_with_password_masked():
    resource = ClickHouseResource(url="http://reader:hunter2@127.0.0.1:9/langfuse", connect_timeout=2)
    with pytest.raises(ClickHouseError) as err:
        resource.query("SELECT 1")
    text = str(err.value)
    assert "http://reader:***@127.0.0.1:9/langfuse" in text
    assert "hunter2" not in text and "hunter2" not in repr(err.value)


def test_queries_are_tagged_with_run_and_partition(ch_http_url, chdb_http):
    resource = ClickHouseResource(url=ch_http_url)
    before = len(chdb_http.state.requests)
    resource.query("SELECT 1", tags={"run": "run-123", "partition": "2026-11-19|proj-a"})
    sent = chdb_http.state.requests[before:]
    tagged = [r for r in sent if "log_comment" in r.sql]
    assert len(tagged) == 1
    assert '"partition": "2026-11-19|proj-a"' in tagged[0].sql and '"run": "run-123"' in tagged[0].sql
    assert tagged[0].query_id.startswith("run-123-2026-11-19_proj-a-")


def test_the_url_is_hidden_from_the_dagster_ui():
    import dagster as dg

    fields = ClickHouseResource.to_config_schema().as_field().config_type.fields
    assert fields["url"].is_secret
    assert not fields["events_table"].is_secret
    assert isinstance(ClickHouseResource(url="http://u:pw@h:8123/db"), dg.ConfigurableResource)


def _probe(tmp_path, rows: int, mode: str) -> dict:
    probe = os.path.join(os.path.dirname(__file__), "stream_memory_probe.py")
    out = subprocess.run([sys.executable, probe, str(tmp_path / f"ch-{mode}-{rows}"), str(rows), mode],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["csv", "arrow"])
def test_streaming_memory_does_not_grow_with_output_size(tmp_path, mode):
    """~400 MB vs ~1.2 GB of output: the peak RSS of the streaming process stays flat.

    (chDB's Arrow stream reads ahead up to a fixed budget, so its peak only plateaus past a few hundred
    MB; both sizes here are past that point.)
    """
    small = _probe(tmp_path, 400_000, mode)
    large = _probe(tmp_path, 1_200_000, mode)
    print(f"\n{mode}: {small['bytes']/1e6:.0f} MB -> peak {small['peak_rss_mb']:.0f} MB; "
          f"{large['bytes']/1e6:.0f} MB -> peak {large['peak_rss_mb']:.0f} MB")
    assert large["bytes"] > 2.9 * small["bytes"] > 3e8
    extra_output_mb = (large["bytes"] - small["bytes"]) / 1e6
    # A buffered result would add at least the extra output (~800 MB); allow a quarter of it for noise.
    assert large["peak_rss_mb"] - small["peak_rss_mb"] < 0.25 * extra_output_mb


def test_two_processes_take_turns_on_one_embedded_directory(tmp_path):
    """Two processes open, write and close the same chDB directory in a loop without an error."""
    path = str(tmp_path / "shared-chdb")
    script = textwrap.dedent(f"""
        import sys
        from exports_pipeline.resources.clickhouse import ClickHouseResource
        ch = ClickHouseResource(url="chdb://{path}")
        who = sys.argv[1]
        ch.command("CREATE TABLE IF NOT EXISTS default.turns (who String, i UInt32) ENGINE = MergeTree ORDER BY who")
        for i in range(6):
            ch.command("INSERT INTO default.turns VALUES ({{w:String}}, {{i:UInt32}})", {{"w": who, "i": i}})
        print("ok", who)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for who in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = ClickHouseResource(url=f"chdb://{path}").query("SELECT who, count() FROM default.turns GROUP BY who ORDER BY who")
    assert counts == [("a", 6), ("b", 6)]


def _threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def test_a_session_starts_the_embedded_engine_once_so_its_threads_do_not_pile_up(tmp_path):
    """Every start of chDB's engine leaves threads behind (Code 439 after 10,000): the queries of one
    session, from any thread of the process, share one start, and the threads stay put."""
    import threading

    ch = ClickHouseResource(url=f"chdb://{tmp_path / 'sess-chdb'}")
    ch.command("CREATE TABLE default.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    ch.command("INSERT INTO default.t SELECT number FROM numbers(1000)")
    ch.query("SELECT sum(a) FROM default.t")  # the pools a read needs exist from here on
    engine = embedded_engine(str(tmp_path / "sess-chdb"))
    starts = []
    original = engine._start
    engine._start = lambda timeout: (starts.append(1), original(timeout))[1]
    before = _threads()
    with ch.session():
        for _ in range(15):
            assert ch.query("SELECT sum(a) FROM default.t") == [(499500,)]
        other = threading.Thread(target=lambda: starts.append(ch.query("SELECT count() FROM default.t")))
        other.start()
        other.join(60)
        with ch.stream("SELECT a FROM default.t ORDER BY a LIMIT 3", "CSV") as chunks:
            assert b"".join(chunks) == b"0\n1\n2\n"
    assert starts == [1, [(1000,)]], "one engine start for the whole session, another thread's query included"
    assert _threads() - before <= 10, "about 5 threads per engine start: one start, not 17"
    engine._start = original


def test_a_session_gives_the_directory_back_when_it_ends(tmp_path):
    """Between sessions another process gets its turn (the file lock goes with the engine)."""
    path = str(tmp_path / "sess-turns")
    ch = ClickHouseResource(url=f"chdb://{path}")
    with ch.session():
        ch.command("CREATE TABLE default.x (a UInt8) ENGINE = MergeTree ORDER BY a")
        probe = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(f"""
                from exports_pipeline.resources.clickhouse import ClickHouseResource
                ch = ClickHouseResource(url="chdb://{path}", lock_timeout_seconds=2)
                try:
                    ch.query("SELECT 1")
                    print("opened")
                except Exception as exc:
                    print("waited:", type(exc).__name__)
            """)], capture_output=True, text=True, timeout=300)
        assert "waited" in probe.stdout, probe.stdout + probe.stderr
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from exports_pipeline.resources.clickhouse import ClickHouseResource
        print(ClickHouseResource(url="chdb://{path}", lock_timeout_seconds=60).query("EXISTS TABLE default.x"))
    """)], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "[(1,)]", out.stdout + out.stderr


def test_leaving_a_session_never_waits_for_a_query_another_thread_still_runs(tmp_path):
    """A cancelled export returns while its engine thread finishes the query; that query then closes the
    engine, so the directory is not held after everything ended."""
    import threading
    import time

    path = str(tmp_path / "sess-cancel")
    ch = ClickHouseResource(url=f"chdb://{path}")
    engine = embedded_engine(path)
    slow = threading.Thread(target=lambda: ch.query(
        "SELECT count() FROM numbers(30) WHERE NOT ignore(sleepEachRow(0.1))"))
    with ch.session():
        slow.start()
        time.sleep(0.5)
        left = time.monotonic()
    assert time.monotonic() - left < 1.0, "the session ended without waiting for the 3 s query"
    assert slow.is_alive() and engine._keeper is not None
    slow.join(60)
    assert engine._keeper is None, "the query's end closed the engine"


def test_a_lingering_engine_serves_the_next_query_and_then_closes(tmp_path):
    import time

    path = str(tmp_path / "linger")
    ch = ClickHouseResource(url=f"chdb://{path}")
    engine = embedded_engine(path)
    engine.linger_seconds = 0.5
    starts = []
    original = engine._start
    engine._start = lambda timeout: (starts.append(1), original(timeout))[1]
    for _ in range(5):
        ch.query("SELECT 1")
    assert starts == [1]
    deadline = time.monotonic() + 10
    while engine._keeper is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine._keeper is None, "closed once idle for the linger"
    ch.query("SELECT 1")
    assert starts == [1, 1]
