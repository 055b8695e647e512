"""The synthetic events generator on the real embedded engine (chDB)."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from exports_pipeline.events import seed as S
from exports_pipeline.events.columns import STORED_COLUMNS
from exports_pipeline.events.ddl import create_events_table

START = dt.date(2026, 1, 30)  # two seeded days cross a month (= partition) boundary when days >= 3
PROJECTS, DAYS, PER_DAY = 2, 3, 2500
BASE = "event_ts = created_at"  # base versions; second versions and tombstones have a later event_ts


@pytest.fixture
def seeded(ch_client):
    create_events_table(ch_client)
    stats = S.seed(ch_client, "events_full", PROJECTS, DAYS, PER_DAY, start=START, seed=7)
    return ch_client, stats


def q(client, sql):
    return client.query(sql).result_rows


def one(client, sql):
    return q(client, sql)[0][0]


def checksum(client, table: str):
    cols = ", ".join(f"`{c.name}`" for c in STORED_COLUMNS)
    return q(client, f"SELECT sum(cityHash64(toString(tuple({cols})))), count() FROM {table}")[0]


# ------------------------------------------------------------------------------------------- counts


def test_stats_and_exact_counts(seeded):
    client, st = seeded
    assert st.project_ids == ("proj-1", "proj-2")
    assert st.days == (dt.date(2026, 1, 30), dt.date(2026, 1, 31), dt.date(2026, 2, 1))
    assert (st.time_from, st.time_to) == (dt.datetime(2026, 1, 30), dt.datetime(2026, 2, 2))
    assert st.base_rows == PROJECTS * DAYS * PER_DAY == 15000
    assert st.rows_inserted == st.base_rows + st.updated_rows + st.deleted_rows
    assert 0.03 * st.base_rows < st.updated_rows < 0.07 * st.base_rows
    assert 0.004 * st.base_rows < st.deleted_rows < 0.016 * st.base_rows
    assert st.seconds > 0 and st.rows_per_second == pytest.approx(st.rows_inserted / st.seconds)
    assert st.large_inputs == 2 * PROJECTS
    # unmerged: every version is still there, and FINAL drops the tombstoned spans
    assert one(client, "SELECT count() FROM events_full") == st.rows_inserted
    assert one(client, "SELECT count() FROM events_full FINAL") == st.final_rows == st.base_rows - st.deleted_rows
    assert one(client, f"SELECT count() FROM events_full WHERE {S.UPDATED_SQL}") == 2 * st.updated_rows
    assert one(client, f"SELECT count() FROM events_full WHERE {S.DELETED_SQL}") == 2 * st.deleted_rows
    assert one(client, "SELECT countIf(is_deleted = 1) FROM events_full") == st.deleted_rows
    assert one(client, "SELECT count() FROM system.parts WHERE database = currentDatabase() AND active") >= 3
    # exactly events_per_day base spans per project per UTC day, every span once
    per_day = q(client, f"""
        SELECT project_id, toDate(start_time, 'UTC') AS d, countIf({BASE}), uniqExact(span_id)
        FROM events_full GROUP BY project_id, d ORDER BY project_id, d""")
    assert per_day == [(p, d, PER_DAY, PER_DAY) for p in st.project_ids for d in st.days]
    # a day boundary in the data is a month boundary here: two partitions
    assert [r[0] for r in q(client, "SELECT DISTINCT partition FROM system.parts "
                                    "WHERE database = currentDatabase() AND active ORDER BY 1")] == ["202601", "202602"]


def test_latest_version_wins_under_final(seeded):
    client, st = seeded
    prefix = S.UPDATED_PREFIX
    # the updated field shows the new value under FINAL, and only for the updated spans
    assert one(client, f"SELECT count() FROM events_full FINAL WHERE {S.UPDATED_SQL}") == st.updated_rows
    assert one(client, f"SELECT countIf(NOT startsWith(output, '{prefix}')) FROM events_full FINAL "
                       f"WHERE {S.UPDATED_SQL}") == 0
    assert one(client, f"SELECT countIf(startsWith(output, '{prefix}')) FROM events_full FINAL "
                       f"WHERE NOT {S.UPDATED_SQL}") == 0
    # without FINAL both versions are visible
    assert one(client, f"SELECT countIf(startsWith(output, '{prefix}')) FROM events_full "
                       f"WHERE {S.UPDATED_SQL}") == st.updated_rows
    assert one(client, f"SELECT countIf(event_ts > created_at AND updated_at = event_ts) FROM events_full FINAL "
                       f"WHERE {S.UPDATED_SQL}") == st.updated_rows
    # tombstoned spans vanish under FINAL
    assert one(client, f"SELECT count() FROM events_full FINAL WHERE {S.DELETED_SQL}") == 0
    assert one(client, "SELECT count() FROM events_full FINAL WHERE is_deleted = 1") == 0
    # what an exporter without FINAL (Langfuse's LIMIT 1 BY) would see agrees with FINAL
    assert one(client, """
        SELECT count() FROM (SELECT span_id, argMax(is_deleted, event_ts) AS del
                             FROM events_full GROUP BY project_id, span_id) WHERE del = 0""") == st.final_rows


# ---------------------------------------------------------------------------------------- structure


def test_ids_projects_and_traces(seeded):
    client, st = seeded
    for pid in st.project_ids:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+", pid) and not set(pid) & set("|,[] \t\n")
    assert [r[0] for r in q(client, "SELECT DISTINCT project_id FROM events_full ORDER BY 1")] == list(st.project_ids)
    # globally unique span ids and trace ids: never shared across projects or days
    assert one(client, "SELECT uniqExact(span_id) FROM events_full") == st.base_rows
    assert one(client, "SELECT uniqExact(span_id, project_id) FROM events_full") == st.base_rows
    assert one(client, "SELECT uniqExact(trace_id) = uniqExact(trace_id, project_id, toDate(start_time)) "
                       "FROM events_full")
    assert one(client, "SELECT countIf(NOT match(span_id, '^[0-9a-f]{16}$') OR NOT match(trace_id, '^[0-9a-f]{32}$')) "
                       "FROM events_full") == 0
    traces = q(client, f"""
        SELECT count(), countIf(roots != 1), countIf(n < 1 OR n > 12), countIf(n < 4),
               countIf(attrs != 1), countIf(root_type != 'SPAN')
        FROM (SELECT trace_id, uniqExactIf(span_id, parent_span_id = '') AS roots, uniqExact(span_id) AS n,
                     uniqExact(trace_name, user_id, session_id, tags, environment, release) AS attrs,
                     anyIf(type, parent_span_id = '') AS root_type
              FROM events_full WHERE {BASE} GROUP BY trace_id)""")[0]
    n_traces, bad_roots, bad_size, short, bad_attrs, bad_root_type = traces
    assert n_traces > st.base_rows / 12
    assert bad_roots == 0 and bad_size == 0 and bad_attrs == 0 and bad_root_type == 0
    assert short <= PROJECTS * DAYS  # only a day's last trace may be cut short
    # every parent is an earlier span of the same trace
    orphans = one(client, f"""
        SELECT count() FROM (SELECT trace_id, span_id, parent_span_id, start_time FROM events_full
                             WHERE {BASE} AND parent_span_id != '') AS c
        LEFT JOIN (SELECT trace_id, span_id, start_time FROM events_full WHERE {BASE}) AS p
               ON c.parent_span_id = p.span_id
        WHERE p.span_id = '' OR p.trace_id != c.trace_id OR p.start_time > c.start_time
        SETTINGS join_use_nulls = 0""")
    assert orphans == 0
    assert one(client, "SELECT countIf(is_app_root) > 0 AND countIf(is_app_root AND parent_span_id != '') = 0 "
                       "FROM events_full")


def test_times_types_and_realistic_fields(seeded):
    client, st = seeded
    row = q(client, """
        SELECT min(start_time), max(start_time), countIf(end_time < start_time), countIf(end_time IS NULL),
               countIf(toMicrosecond(start_time) % 1000 != 0),
               countIf(type = 'GENERATION'), countIf(type = 'GENERATION' AND completion_start_time IS NULL),
               countIf(type NOT IN ('GENERATION') AND completion_start_time IS NOT NULL),
               countIf(completion_start_time < start_time OR completion_start_time > end_time)
        FROM events_full""")[0]
    lo, hi, neg, null_end, micro, gens, gen_no_cst, other_cst, cst_out = row
    assert lo >= st.time_from and hi < st.time_to
    # spread over each whole day: every hour of every project-day has spans
    hours = q(client, "SELECT project_id, toDate(start_time, 'UTC') AS d, uniqExact(toHour(start_time, 'UTC')) "
                      "FROM events_full GROUP BY project_id, d")
    assert len(hours) == PROJECTS * DAYS and all(h == 24 for _, _, h in hours)
    assert neg == 0 and null_end > 0 and micro > st.base_rows / 2
    assert gens > 0 and gen_no_cst == 0 and other_cst == 0 and cst_out == 0
    assert {r[0] for r in q(client, "SELECT DISTINCT type FROM events_full")} >= {"SPAN", "GENERATION", "EVENT"}
    levels = {r[0] for r in q(client, "SELECT DISTINCT level FROM events_full")}
    assert levels == {"DEFAULT", "DEBUG", "WARNING", "ERROR"}
    environments = {r[0] for r in q(client, "SELECT DISTINCT environment FROM events_full")}
    assert environments == {"default", "production", "staging"}
    assert one(client, "SELECT countIf(level IN ('WARNING', 'ERROR') AND status_message != '') > 0 AND "
                       "countIf(level IN ('DEFAULT', 'DEBUG') AND status_message != '') = 0 FROM events_full")
    gen = q(client, """
        SELECT countIf(provided_model_name = ''), countIf(model_parameters = '' OR NOT isValidJSON(model_parameters)),
               countIf(usage_details['total'] != usage_details['input'] + usage_details['output']),
               countIf(cost_details['total'] != cost_details['input'] + cost_details['output']),
               countIf(calculated_total_cost != cost_details['total']), countIf(total_cost != cost_details['total']),
               countIf(calculated_input_cost != cost_details['input']), countIf(cost_details['total'] <= 0),
               uniqExact(provided_model_name), countIf(length(provided_usage_details) > 0),
               countIf(length(provided_cost_details) > 0), countIf(prompt_name != '' AND prompt_version IS NULL),
               countIf(prompt_name != '' AND prompt_version IS NOT NULL), countIf(length(tool_definitions) > 0),
               countIf(length(tool_calls) != length(tool_call_names)), countIf(length(tool_calls) > 0),
               countIf(usage_pricing_tier_id IS NULL)
        FROM events_full WHERE type = 'GENERATION'""")[0]
    (no_model, bad_params, bad_usage, bad_cost, bad_calc, bad_total, bad_in, zero_cost, models, prov_usage,
     prov_cost, prompt_null_version, prompt_version, tool_defs, tool_mismatch, tool_calls, tier_null) = gen
    assert no_model == bad_params == bad_usage == bad_cost == bad_calc == bad_total == bad_in == zero_cost == 0
    assert models >= 4 and prov_usage > 0 and prov_cost > 0 and tool_defs > 0 and tool_calls > 0
    assert prompt_null_version > 0 and prompt_version > 0 and tier_null > 0 and tool_mismatch == 0
    assert one(client, "SELECT countIf(type NOT IN ('GENERATION', 'EMBEDDING') AND "
                       "(length(cost_details) > 0 OR provided_model_name != '')) FROM events_full") == 0
    assert one(client, "SELECT countIf(length(metadata_names) != length(metadata_values)) FROM events_full") == 0
    exp = q(client, """
        SELECT countIf(experiment_id != ''), countIf(experiment_id != '' AND experiment_item_version IS NULL),
               countIf(experiment_id = '' AND experiment_item_version IS NOT NULL),
               countIf(experiment_id != '' AND experiment_item_root_span_id = '')
        FROM events_full""")[0]
    assert exp[0] > 0 and exp[1:] == (0, 0, 0)
    assert one(client, "SELECT countIf(service_name = '' OR scope_name = '' OR telemetry_sdk_language = '' "
                       "OR telemetry_sdk_name = '' OR ingestion_sdk_name IN ('', 'unknown') OR source = '') "
                       "FROM events_full") == 0
    assert one(client, "SELECT countIf(created_at < start_time OR event_ts < created_at OR updated_at < created_at) "
                       "FROM events_full") == 0


HARD_CLASSES = {
    "comma": "position(@, ',') > 0",
    "double quote": "position(@, '\"') > 0",
    "single quote": "position(@, '\\'') > 0",
    "LF": "position(@, '\\n') > 0",
    "CRLF": "position(@, '\\r\\n') > 0",
    "tab": "position(@, '\\t') > 0",
    "backslash": "position(@, '\\\\') > 0",
    "literal \\u00e9": "position(@, '\\\\u00e9') > 0",
    "é": "position(@, 'é') > 0",
    "CJK": "position(@, '中文') > 0",
    "Ω": "position(@, 'Ω') > 0",
    "emoji": "position(@, '🚀') > 0",
    "multi-codepoint emoji": "position(@, '👍🏽') > 0",
    "JSON object": "startsWith(@, '{') AND isValidJSON(@)",
    "empty": "@ = ''",
    "literal NULL": "@ = 'NULL'",
}


def test_every_hard_text_class_in_every_project_day(seeded):
    client, st = seeded
    for column in ("output", "metadata_values"):
        conds = []
        for label, pred in HARD_CLASSES.items():
            expr = (f"arrayExists(x -> {pred.replace('@', 'x')}, metadata_values)" if column == "metadata_values"
                    else pred.replace("@", column))
            conds.append(f"countIf({expr}) AS `{label}`")
        res = client.query(f"SELECT project_id, toDate(start_time, 'UTC') AS d, {', '.join(conds)} "
                           f"FROM events_full WHERE {BASE} GROUP BY project_id, d ORDER BY project_id, d")
        assert len(res.result_rows) == PROJECTS * DAYS
        for row in res.named_results():
            missing = [label for label in HARD_CLASSES if row[label] == 0]
            assert missing == [], (column, row["project_id"], row["d"], missing)
    # byte-exact: every sample string arrives unchanged (SQL escaping included) in every project-day
    for column in ("output", "metadata_values[1]"):
        got = q(client, f"SELECT project_id, toDate(start_time, 'UTC') AS d, groupUniqArray({column}) "
                        f"FROM events_full WHERE {BASE} GROUP BY project_id, d")
        assert len(got) == PROJECTS * DAYS
        for pid, d, values in got:
            assert sorted(values) == sorted(S.HARD_STRINGS), (column, pid, d)
    # raw input of non-GENERATION spans carries the classes too; generations hold them JSON-encoded
    raw = {label: pred.replace("@", "input") for label, pred in HARD_CLASSES.items()}
    row = client.query(f"SELECT {', '.join(f'countIf({p}) AS `{k}`' for k, p in raw.items())} "
                       "FROM events_full WHERE type != 'GENERATION'").named_results()
    assert [k for k, v in next(iter(row)).items() if v == 0] == []
    assert one(client, "SELECT countIf(type = 'GENERATION' AND length(input) < 1000000 AND "
                       "NOT isValidJSON(input)) FROM events_full") == 0
    for column in ("name", "status_message", "experiment_description"):
        for label in ("comma", "double quote", "LF", "emoji", "CJK"):
            assert one(client, f"SELECT countIf({HARD_CLASSES[label].replace('@', column)}) FROM events_full") > 0, \
                (column, label)
    nulls = q(client, "SELECT countIf(end_time IS NULL), countIf(prompt_version IS NULL), "
                      "countIf(usage_pricing_tier_name IS NULL), countIf(experiment_item_version IS NULL), "
                      "countIf(completion_start_time IS NULL) FROM events_full")[0]
    assert all(n > 0 for n in nulls)


def test_large_inputs(seeded):
    client, st = seeded
    rows = q(client, f"""
        SELECT project_id, toDate(start_time, 'UTC'), length(input), lengthUTF8(input) = input_length
        FROM events_full WHERE {BASE} AND length(input) > 1048576 ORDER BY project_id""")
    assert len(rows) == st.large_inputs == 2 * PROJECTS
    assert {r[0] for r in rows} == set(st.project_ids)
    assert all(r[1] == st.days[0] and r[3] for r in rows)
    assert one(client, f"SELECT countIf(length(input) > 100000) FROM events_full WHERE {BASE}") == st.large_inputs


# ------------------------------------------------------------------------------------ determinism etc.


def test_deterministic_and_seed_sensitive(ch_client, ch_database):
    dbs = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for db in dbs:
        ch_client.command(f"CREATE DATABASE {db}")
    try:
        sums = []
        for db, seed, chunk in zip(dbs, (3, 3, 4), (1_000_000, 1_700, 1_000_000)):
            create_events_table(ch_client, f"{db}.events_full")
            st = S.seed(ch_client, f"{db}.events_full", 2, 2, 2000, start=START, seed=seed, chunk_rows=chunk)
            assert st.table == f"`{db}`.`events_full`"
            sums.append(checksum(ch_client, f"`{db}`.events_full"))
        # same arguments, different INSERT chunking: identical content, row for row
        assert sums[0] == sums[1]
        assert sums[0][1] == sums[1][1] > 8000
        # another seed: different ids and content
        assert sums[2][0] != sums[0][0]
        overlap = one(ch_client, f"SELECT count() FROM `{dbs[0]}`.events_full "
                                 f"WHERE span_id IN (SELECT span_id FROM `{dbs[2]}`.events_full)")
        assert overlap == 0
    finally:
        for db in dbs:
            ch_client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def test_seeding_twice_is_refused_and_replace_is_exact(ch_client):
    create_events_table(ch_client)
    first = S.seed(ch_client, "events_full", 2, 1, 1000, start=START)
    before = checksum(ch_client, "events_full")
    with pytest.raises(S.SeedConflictError, match="already has"):
        S.seed(ch_client, "events_full", 2, 1, 1000, start=START)
    # an overlapping range is refused as well (proj-1 on START exists)
    with pytest.raises(S.SeedConflictError):
        S.seed(ch_client, "events_full", 1, 2, 10, start=START - dt.timedelta(days=1))
    assert checksum(ch_client, "events_full") == before
    # a disjoint day range is fine and leaves the first seed alone
    later = S.seed(ch_client, "events_full", 2, 1, 1000, start=START + dt.timedelta(days=1))
    assert one(ch_client, "SELECT count() FROM events_full") == first.rows_inserted + later.rows_inserted
    # replace=True deletes exactly the requested range first, then seeds it again
    again = S.seed(ch_client, "events_full", 2, 1, 1000, start=START, replace=True)
    assert again.replaced_rows == first.rows_inserted
    assert one(ch_client, "SELECT count() FROM events_full") == first.rows_inserted + later.rows_inserted
    assert one(ch_client, "SELECT count() FROM events_full FINAL") == first.final_rows + later.final_rows
    assert checksum(ch_client, f"events_full WHERE toDate(start_time) = '{START}'") == before


def test_default_start_is_complete_past_days(ch_client):
    create_events_table(ch_client)
    today = dt.datetime.now(dt.timezone.utc).date()
    st = S.seed(ch_client, "events_full", 1, 2, 50)
    assert st.days == (today - dt.timedelta(days=2), today - dt.timedelta(days=1))
    assert st.time_to == dt.datetime.combine(today, dt.time())
    latest = one(ch_client, "SELECT max(start_time) FROM events_full")
    assert st.time_from <= one(ch_client, "SELECT min(start_time) FROM events_full") and latest < st.time_to


def test_argument_validation(ch_client):
    create_events_table(ch_client)
    for kwargs in ({"projects": 0}, {"days": 0}, {"events_per_day": 0}, {"projects": 5000}):
        args = {"projects": 1, "days": 1, "events_per_day": 10, **kwargs}
        with pytest.raises(ValueError):
            S.seed(ch_client, "events_full", **args)
    with pytest.raises(ValueError, match="invalid ClickHouse"):
        S.seed(ch_client, "events-full; DROP", 1, 1, 10)
    assert one(ch_client, "SELECT count() FROM events_full") == 0


def test_small_days_and_rate(ch_client, capsys):
    create_events_table(ch_client)
    tiny = S.seed(ch_client, "events_full", 3, 1, 1, start=START)  # one span per day: a lone root
    assert tiny.large_inputs == 0
    assert q(ch_client, "SELECT count(), countIf(parent_span_id = ''), countIf(length(input) > 1000000) "
                        f"FROM events_full WHERE {BASE}")[0] == (3, 3, 0)
    # 200k rows: the rate is printed (the lead measures it via the CLI); correctness is asserted
    st = S.seed(ch_client, "events_full", 2, 1, 100_000, start=START + dt.timedelta(days=1))
    with capsys.disabled():
        print(f"\nseed: {st.rows_inserted} rows in {st.seconds:.2f}s = {st.rows_per_second:,.0f} rows/s "
              f"({st.inserts} INSERTs)")
    assert st.inserts == 2
    assert one(ch_client, f"SELECT count() FROM events_full WHERE toDate(start_time) = '{st.days[0]}'") \
        == st.rows_inserted
    assert one(ch_client, f"SELECT count() FROM events_full FINAL WHERE toDate(start_time) = '{st.days[0]}'") \
        == st.final_rows
