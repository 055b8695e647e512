"""Synthetic, deterministic Langfuse `events_full` data, generated inside ClickHouse.

Every row is computed by ClickHouse (`INSERT INTO ... SELECT ... FROM numbers_mt(a, b)`),
so seeding runs at engine speed, not at Python speed. A row is a pure function of
(seed, project index, day, row number within the project-day): re-running with the same arguments
produces the same ids and the same content, timestamps included (nothing reads the clock: created_at,
updated_at and event_ts are derived from start_time).

Shape of the data (what later tests and the benchmark rely on; exports_pipeline_tests/events checks it):

* `events_per_day` spans per project per UTC day, grouped into traces of 4–12 spans (sizes cycle through
  `TRACE_SIZES`; the last trace of a day can be shorter). Position 0 of a trace is its only root
  (`parent_span_id = ''`, type SPAN); every other span's parent is an earlier span of the same trace.
* Span ids are 16 hex chars, trace ids 32 hex chars, and both are **globally unique**: they are a
  bijective scramble of (project index, day number, row/trace number), not a hash, so two projects or
  two days can never share one. (The seed is XOR-ed in, so a different seed gives different ids.)
* Hard text: `output` and one metadata value of every row cycle through all `HARD_STRINGS` (the index is
  `(n * k + c) mod 31`, 31 prime), so every value class occurs in every 31 consecutive rows of every
  project-day; `input` carries them raw for non-GENERATION rows and JSON-encoded in a chat message for
  GENERATION rows; `name` and `status_message` use them on a hash-chosen subset.
* `large_inputs_per_project` rows (default 2) on the first seeded day of each project get an input of
  about 1.2 MB (> 1 MB).
* Versions, left unmerged: spans with `cityHash64(span_id) % 100 < 5` get a second version (event_ts and
  updated_at 10 minutes later, output prefixed with `UPDATED_PREFIX`, everything else equal); spans with
  `cityHash64(span_id) % 100 = 5` get a tombstone (is_deleted = 1, event_ts 20 minutes later). See
  `UPDATED_SQL` / `DELETED_SQL` (both hash the span id, so tests can predict them). Base rows have
  `event_ts = created_at`; later versions have `event_ts > created_at`. So `count()` = base + updated +
  deleted and `count() FINAL` = base − deleted. The versions go in their own INSERT (own parts), and
  background merges of the table are stopped (`SYSTEM STOP MERGES`, `stop_merges=True`) so they stay
  unmerged while this engine session lasts. chDB forgets that on close, so a later process may merge
  them: that drops the superseded base versions of updated spans but keeps the tombstones (measured:
  after `OPTIMIZE TABLE ... FINAL`, count() = base rows, FINAL = base − deleted; only
  `OPTIMIZE ... FINAL CLEANUP` removes tombstones), so `count() > count() FINAL` holds either way.
* Speed: rows are generated in ClickHouse from `numbers_mt` (two generator streams on two cores) into
  ≤ `chunk_rows` (1M) row INSERTs with one sink per core (`max_insert_threads`); `optimize_on_insert = 0` (an
  INSERT never holds two versions of one key, so the insert-time collapse is pure cost, ≈2x measured).

Seeding twice into the same table: **refused**. Before inserting, `seed()` counts existing rows of the
requested project ids in the requested time range; if there are any it raises `SeedConflictError` and
inserts nothing (silently doubling the data would corrupt every count a test or benchmark relies on).
Pass `replace=True` to delete those rows first (a synchronous `ALTER TABLE ... DELETE` mutation limited
to the project ids and the time range; rows of other projects or days are untouched).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass

from exports_pipeline.events.columns import INSERT_COLUMNS
from exports_pipeline.events.ddl import qualified_name

# ------------------------------------------------------------------------------------------ public knobs

#: Span counts of consecutive traces (cycled). 4..12 spans per trace; sum = TRACE_BLOCK rows per cycle.
TRACE_SIZES: tuple[int, ...] = (4, 7, 12, 5, 9, 6, 11, 8, 10)
TRACE_BLOCK = sum(TRACE_SIZES)

UPDATE_PERCENT = 5
DELETE_PERCENT = 1
#: SQL predicates (on a table's span_id) that say which spans the seeder versioned.
UPDATED_SQL = f"(cityHash64(span_id) % 100 < {UPDATE_PERCENT})"
DELETED_SQL = (f"(cityHash64(span_id) % 100 >= {UPDATE_PERCENT} "
               f"AND cityHash64(span_id) % 100 < {UPDATE_PERCENT + DELETE_PERCENT})")
#: The second version of an updated span has this prefix on its output.
UPDATED_PREFIX = "[v2] "
#: Offsets of the second version / tombstone after the base version's event_ts.
UPDATE_DELAY_US = 10 * 60 * 1_000_000
DELETE_DELAY_US = 20 * 60 * 1_000_000

LARGE_INPUT_UNIT = 'large "input", with commas\nand 中文 🚀 é \\ '  # 48 bytes UTF-8
LARGE_INPUT_REPEAT = 25_000  # ≈ 1.2 MB per large input

DEFAULT_CHUNK_ROWS = 1_000_000
MAX_PROJECTS = 4095  # 12 bits of the id packing
MAX_EVENTS_PER_DAY = 2**32 - 1

#: The hard-text value classes. Length is prime (31) so the per-column cycles below cover every class.
HARD_STRINGS: tuple[str, ...] = (
    "plain ascii text",
    "comma, separated, values",
    'she said "hello" and left',
    "it's a single 'quoted' word",
    "line one\nline two\nline three",
    "windows line\r\nsecond line\r\n",
    "col1\tcol2\tcol3",
    "C:\\Users\\lf\\path and a literal \\n backslash-n",
    "escaped unicode as text: \\u00e9 \\u4e2d \\ud83d\\ude80",
    "café résumé naïve é",
    "中文字符测试 你好世界",
    "Ω ≈ ç √ ∫ µ ≤ ≥",
    "🚀 launch",
    "👍🏽 thumbs up, 👨‍👩‍👧 family, 🇩🇪 flag",
    '{"key": "value", "nested": {"a": [1, 2, 3]}, "quote": "say \\"hi\\"", "text": "a,b\\nc"}',
    "",
    '[1, "two", {"three": 3.0}, null, true]',
    "mixed: \"a,b\"\n\t'c' \\ 🚀 中文 é\r\nend",
    "   leading and trailing spaces   ",
    "NULL",
    "null",
    '"',
    'a "quoted, with comma" field\r\nnext,"row"',
    "<html><b>bold</b> &amp; entities &lt;tag&gt;</html>",
    "SELECT * FROM t WHERE x = '1'; -- sql",
    "emoji only 😀😃😄😁",
    "tab\tand\nnewline,comma\"quote'apostrophe",
    "lorem ipsum dolor sit amet " * 20,
    "right-to-left: שלום مرحبا",
    "=cmd|' /C calc'!A0",
    "trailing backslash \\",
)
assert len(HARD_STRINGS) == 31

_SPAN_NAMES = ("handle-request", "llm-call", "retrieve-docs", "rerank", "tool:get_weather", "tool:search",
               "parse-output", "embed-query", "guardrail-check", "agent-step", "format-answer", "cache-lookup")
_TRACE_NAMES = ("chat-completion", "rag-pipeline", "support-agent", "summarize-document", "classify-ticket",
                "code-review", "translate", "extract-entities")
_TAGS = ("prod", "beta", "experiment", "customer-a", "customer-b", "mobile", "web", "batch")
_ENVIRONMENTS = ("default", "production", "production", "staging")
#: (provided model name, internal model id, input price per token, output price per token)
_MODELS = (
    ("gpt-4o", "cm1gpt4o00000000000000001", "0.0000025", "0.00001"),
    ("gpt-4o-mini", "cm1gpt4omini000000000002", "0.00000015", "0.0000006"),
    ("claude-3-5-sonnet-20241022", "cm1claude35sonnet0000003", "0.000003", "0.000015"),
    ("gemini-1.5-pro", "cm1gemini15pro0000000004", "0.00000125", "0.000005"),
    ("llama-3.1-70b-instruct", "", "0.00000088", "0.00000088"),  # unmatched model: no internal id
    ("text-embedding-3-small", "cm1embed3small0000000006", "0.00000002", "0"),
)
_MODEL_PARAMS = ('{"temperature":0.7,"max_tokens":1024}', '{"temperature":0,"top_p":1}',
                 '{"temperature":1.2,"max_tokens":256,"stop":["\\n\\n"]}', "{}")
_PROMPTS = ("qa-system-prompt", "summarizer", "router", "agent-instructions")
_OBS_TYPES = ("GENERATION", "GENERATION", "GENERATION", "SPAN", "SPAN", "EVENT", "TOOL", "AGENT",
              "RETRIEVER", "EMBEDDING", "CHAIN", "EVALUATOR", "GUARDRAIL")
_TOOL_DEFS = (
    ("get_weather", '{"type":"function","parameters":{"city":{"type":"string"}}}'),
    ("search_docs", '{"description":"Search the docs, \\"quoted\\" and 中文","parameters":{}}'),
)
_TOOL_CALLS = ('{"name":"get_weather","arguments":"{\\"city\\":\\"Zürich\\"}"}',)
_SDKS = (("langfuse-python", "3.8.1", "python", "opentelemetry", "1.36.0"),
         ("langfuse-js", "4.2.0", "nodejs", "opentelemetry", "2.0.1"))

_DAY_US = 86_400 * 1_000_000
_ROOT_WINDOW_US = _DAY_US - 120 * 1_000_000  # a trace (root start + < 2 min) never crosses midnight


class SeedConflictError(ValueError):
    """The target table already holds rows of the requested projects in the requested time range."""


@dataclass(frozen=True)
class SeedStats:
    table: str                      # quoted `db`.`table` seeded
    project_ids: tuple[str, ...]    # 'proj-1' ... in order
    days: tuple[dt.date, ...]       # the UTC days seeded, in order
    time_from: dt.datetime          # inclusive, UTC midnight of the first day (naive, UTC)
    time_to: dt.datetime            # exclusive, UTC midnight after the last day (naive, UTC)
    events_per_day: int             # base rows (spans) per project per day
    seed: int
    base_rows: int                  # projects * days * events_per_day
    updated_rows: int               # second versions inserted (UPDATED_SQL)
    deleted_rows: int               # tombstones inserted (DELETED_SQL)
    large_inputs: int               # rows whose input is > 1 MB
    rows_inserted: int              # base + updated + deleted = count() right after seeding
    seconds: float                  # wall time of the inserts (the conflict check excluded)
    rows_per_second: float          # rows_inserted / seconds
    replaced_rows: int = 0          # rows deleted first when replace=True
    inserts: int = 0                # INSERT statements issued

    @property
    def final_rows(self) -> int:
        """`count() FINAL` of the seeded range: base − deleted."""
        return self.base_rows - self.deleted_rows


# ----------------------------------------------------------------------------------------- SQL helpers


def sql_literal(s: str) -> str:
    """A ClickHouse string literal for an arbitrary Python string."""
    out = s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{out}'"


def _arr(items) -> str:
    return "[" + ", ".join(sql_literal(x) for x in items) + "]"


def _seed_keys(seed: int) -> tuple[int, int, int]:
    """Three 64-bit constants derived from the seed (stable across Python versions/processes)."""
    h = hashlib.sha256(f"exports-pipeline-seed:{seed}".encode()).digest()
    return tuple(int.from_bytes(h[i : i + 8], "little") for i in (0, 8, 16))  # type: ignore[return-value]


def project_id(i: int) -> str:
    """Project ids are usable as Dagster dynamic partition keys (no `|`, `,`, `[`, `]`, whitespace)."""
    return f"proj-{i}"


def default_start(days: int, today: dt.date | None = None) -> dt.date:
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return today - dt.timedelta(days=days)


def _span_expr(nexpr: str, k_span: int) -> str:
    """Span id of row `nexpr` of project `p`, day number `dnum`: p (12 bits) | dnum (16 bits) | n (32 bits),
    times an odd constant mod 2^64 (a bijection) and XOR a seed key → 16 hex chars, globally unique."""
    return (f"leftPad(lower(hex(bitXor((bitShiftLeft(toUInt64(p), 48) + bitShiftLeft(toUInt64(dnum), 32)"
            f" + toUInt64({nexpr})) * 0x9E3779B97F4A7C15, toUInt64({k_span})))), 16, '0')")


def _select_sql(*, first_day_num: int, days: int, events_per_day: int, lo: int, hi: int, seed: int,
                versions: bool, large_per_project: int) -> str:
    """SELECT producing rows for global numbers [lo, hi) in INSERT_COLUMNS order.

    Global row g → project index p (1-based), day index d, row n within the project-day.
    versions=False: the base row of every span (ver 0). versions=True: only the versioned spans, as their
    second version (ver 1, spans matching UPDATED_SQL) or their tombstone (ver 2, DELETED_SQL).
    """
    k_span, k_trace, k_hash = _seed_keys(seed)
    n_per_day = events_per_day
    sizes = TRACE_SIZES
    tib = [i for i, s in enumerate(sizes) for _ in range(s)]        # trace index within block
    pib = [j for s in sizes for j in range(s)]                       # position within trace
    ntr = len(sizes)
    # Traces start in trace order, evenly spread over the day with a random offset inside their slot:
    # the day is covered uniformly, and rows arrive nearly in the table's sort order (minute first), which
    # makes the insert-time sort a cheap, cache-friendly near-identity permutation.
    traces_per_day = -(-n_per_day // TRACE_BLOCK) * ntr
    spacing = max(1, _ROOT_WINDOW_US // traces_per_day)
    big = f"repeat({sql_literal(LARGE_INPUT_UNIT)}, if(is_large, {LARGE_INPUT_REPEAT}, 0))"
    models = _MODELS

    # span / trace id packing: p (12 bits) | day number (16 bits) | n or t (32 bits) → scrambled bijectively
    def span_of(nexpr: str) -> str:
        return _span_expr(nexpr, k_span)

    if versions:
        ver = f"toUInt8(if({UPDATED_SQL}, 1, 2))"
        where = f"WHERE {UPDATED_SQL} OR {DELETED_SQL}"
    else:
        ver, where = "toUInt8(0)", ""
    ev_delay = f"multiIf(ver = 1, {UPDATE_DELAY_US}, ver = 2, {DELETE_DELAY_US}, 0)"

    inner = f"""
SELECT
    g, p, d, n, dnum, h, th, pos, n0, t, is_large,
    {span_of('n')} AS span_id,
    {ver} AS ver,
    concat(leftPad(lower(hex(bitXor((bitShiftLeft(toUInt64(p), 48) + bitShiftLeft(toUInt64(dnum), 32) + toUInt64(t))
                                     * 0xC2B2AE3D27D4EB4F, toUInt64({k_trace})))), 16, '0'),
           leftPad(lower(hex(th)), 16, '0')) AS trace_id,
    if(pos = 0, '', {span_of('n0 + if(pos = 1, 0, h % pos)')}) AS parent_span_id,
    if(pos = 0, 'SPAN', arrayElement({_arr(_OBS_TYPES)}, 1 + (bitShiftRight(h, 8) % {len(_OBS_TYPES)}))) AS obs_type,
    toInt64(dnum) * {_DAY_US} + toInt64(t) * {spacing} + toInt64(th % {spacing}) AS root_us,
    root_us + if(pos = 0, 0, pos * 250000 + toInt64(bitShiftRight(h, 16) % 200000)) AS start_us,
    start_us + if(pos = 0, 5000000 + toInt64(bitShiftRight(th, 20) % 55000000),
                  1000 + toInt64(bitShiftRight(h, 24) % 30000000)) AS end_us,
    (bitShiftRight(h, 40) % 50) = 0 AS end_null,
    end_us + 500000 + toInt64(bitShiftRight(h, 4) % 3000000) AS ingest_us  -- ingested after the span ended
FROM
(
    SELECT
        number AS g,
        toUInt32(1 + intDiv(g, {days * n_per_day})) AS p,
        toUInt32(intDiv(g, {n_per_day}) % {days}) AS d,
        toUInt64(g % {n_per_day}) AS n,
        toUInt32({first_day_num} + d) AS dnum,
        cityHash64({k_hash}, p, dnum, n) AS h,
        intDiv(n, {TRACE_BLOCK}) AS blk,
        toUInt64(n % {TRACE_BLOCK}) AS r,
        blk * {ntr} + arrayElement({tib}, r + 1) AS t,
        toUInt64(arrayElement({pib}, r + 1)) AS pos,
        n - pos AS n0,
        cityHash64({k_hash}, p, dnum, t, 'trace') AS th,
        d = 0 AND n >= 1 AND n <= {large_per_project} AS is_large
    FROM numbers_mt({lo}, {hi - lo})
)
{where}
"""

    is_gen = "obs_type = 'GENERATION'"
    is_emb = "obs_type = 'EMBEDDING'"
    model_i = f"(1 + if({is_emb}, {len(models) - 1}, bitShiftRight(th, 12) % {len(models) - 1}))"
    has_model = f"({is_gen} OR {is_emb})"
    tok_in = "toUInt64(20 + bitShiftRight(h, 28) % 4000)"
    tok_out = f"if({is_emb}, toUInt64(0), toUInt64(5 + bitShiftRight(h, 36) % 1500))"
    price_in = f"arrayElement([{', '.join(f'toDecimal64({sql_literal(m[2])}, 12)' for m in models)}], {model_i})"
    price_out = f"arrayElement([{', '.join(f'toDecimal64({sql_literal(m[3])}, 12)' for m in models)}], {model_i})"
    cost_in = f"(toDecimal64({tok_in}, 0) * {price_in})"
    cost_out = f"(toDecimal64({tok_out}, 0) * {price_out})"
    has_prompt = f"({is_gen} AND bitShiftRight(th, 30) % 3 = 0)"
    has_tools = f"({is_gen} AND bitShiftRight(h, 44) % 4 = 1)"
    is_exp = "(bitShiftRight(th, 33) % 50 = 0)"
    hard = _arr(HARD_STRINGS)
    L = len(HARD_STRINGS)
    sdk = f"(1 + bitShiftRight(th, 40) % {len(_SDKS)})"
    level_pick = "bitShiftRight(h, 48) % 100"
    level = (f"multiIf({level_pick} < 4, 'ERROR', {level_pick} < 10, 'WARNING', "
             f"{level_pick} < 15, 'DEBUG', 'DEFAULT')")
    output = f"arrayElement({hard}, 1 + (n * 7 + 3 + p) % {L})"
    if versions:
        output = f"if(ver = 1, concat({sql_literal(UPDATED_PREFIX)}, {output}), {output})"
    raw_input = f"arrayElement({hard}, 1 + (n * 11 + 5 + d) % {L})"
    input_ = (f"if(is_large, {big}, if({is_gen}, concat('[{{\"role\":\"system\",\"content\":\"You are helpful.\"}},"
              f"{{\"role\":\"user\",\"content\":', toJSONString({raw_input}), '}}]'), {raw_input}))")
    t_of = lambda us: f"fromUnixTimestamp64Micro(toInt64({us}), 'UTC')"  # noqa: E731
    ev_us = f"ingest_us + {ev_delay}"
    cst_us = "start_us + least(toInt64(bitShiftRight(h, 32) % 2000000), end_us - start_us)"  # first token ≤ end

    exprs = {
        "project_id": "concat('proj-', toString(p))",
        "trace_id": "trace_id",
        "span_id": "span_id",
        "parent_span_id": "parent_span_id",
        "start_time": t_of("start_us"),
        "end_time": f"if(end_null, NULL, {t_of('end_us')})",
        "name": (f"if(bitShiftRight(h, 52) % 8 = 0, arrayElement({hard}, 1 + bitShiftRight(h, 56) % {L}), "
                 f"if(pos = 0, arrayElement({_arr(_TRACE_NAMES)}, "
                 f"1 + bitShiftRight(th, 4) % {len(_TRACE_NAMES)}), "
                 f"arrayElement({_arr(_SPAN_NAMES)}, 1 + bitShiftRight(h, 12) % {len(_SPAN_NAMES)})))"),
        "type": "obs_type",
        "environment": f"arrayElement({_arr(_ENVIRONMENTS)}, 1 + bitShiftRight(th, 8) % {len(_ENVIRONMENTS)})",
        "version": "if(bitShiftRight(h, 20) % 4 = 0, '', concat('v', toString(1 + bitShiftRight(h, 22) % 3)))",
        "release": "concat('release-2026.', toString(bitShiftRight(th, 16) % 5))",
        "trace_name": f"arrayElement({_arr(_TRACE_NAMES)}, 1 + bitShiftRight(th, 4) % {len(_TRACE_NAMES)})",
        "user_id": ("if(bitShiftRight(th, 24) % 10 = 0, '', "
                    "concat('user-', toString(bitShiftRight(th, 26) % 1000)))"),
        "session_id": ("if(bitShiftRight(th, 36) % 5 = 0, '', concat('sess-', leftPad(lower(hex(cityHash64("
                       f"{k_hash}, p, dnum, intDiv(t, 3)))), 16, '0')))"),
        "tags": (f"arraySlice(arrayMap(i -> arrayElement({_arr(_TAGS)}, "
                 f"1 + (bitShiftRight(th, 44) + i * 3) % {len(_TAGS)}), [0, 1, 2]), 1, bitShiftRight(th, 50) % 4)"),
        "level": level,
        "status_message": f"if({level_pick} < 10, arrayElement({hard}, 1 + (n * 17 + 2) % {L}), '')",
        "completion_start_time": f"if({is_gen}, {t_of(cst_us)}, NULL)",
        "is_app_root": "pos = 0 AND bitShiftRight(th, 56) % 3 = 0",
        "bookmarked": "bitShiftRight(h, 58) % 50 = 0",
        "public": "bitShiftRight(th, 58) % 40 = 0",
        "prompt_id": (f"if({has_prompt}, concat('prm-', toString(1 + bitShiftRight(th, 32) % 4), '-', "
                      "toString(1 + bitShiftRight(th, 34) % 5)), '')"),
        "prompt_name": f"if({has_prompt}, arrayElement({_arr(_PROMPTS)}, 1 + bitShiftRight(th, 32) % 4), '')",
        "prompt_version": (f"if({has_prompt} AND bitShiftRight(th, 38) % 4 != 0, "
                           "toUInt16(1 + bitShiftRight(th, 34) % 5), NULL)"),
        "model_id": f"if({has_model}, arrayElement({_arr(m[1] for m in models)}, {model_i}), '')",
        "provided_model_name": f"if({has_model}, arrayElement({_arr(m[0] for m in models)}, {model_i}), '')",
        "model_parameters": (f"if({is_gen}, arrayElement({_arr(_MODEL_PARAMS)}, "
                             f"1 + bitShiftRight(h, 18) % {len(_MODEL_PARAMS)}), '')"),
        # a third of the SDKs report no total; Langfuse's usage_details always has one
        "provided_usage_details": (
            f"mapFromArrays(if({has_model}, if(bitShiftRight(h, 46) % 3 = 0, ['input', 'output'], "
            "['input', 'output', 'total']), []), "
            f"if({has_model}, arraySlice([{tok_in}, {tok_out}, {tok_in} + {tok_out}], 1, "
            "if(bitShiftRight(h, 46) % 3 = 0, 2, 3)), []))"),
        "usage_details": (f"mapFromArrays(if({has_model}, ['input', 'output', 'total'], []), "
                          f"if({has_model}, [{tok_in}, {tok_out}, {tok_in} + {tok_out}], []))"),
        "provided_cost_details": (f"mapFromArrays(if({has_model} AND bitShiftRight(h, 50) % 5 = 0, ['total'], []), "
                                  f"if({has_model} AND bitShiftRight(h, 50) % 5 = 0, [{cost_in} + {cost_out}], []))"),
        "cost_details": (f"mapFromArrays(if({has_model}, ['input', 'output', 'total'], []), "
                         f"if({has_model}, [{cost_in}, {cost_out}, {cost_in} + {cost_out}], []))"),
        "usage_pricing_tier_id": f"if({has_model} AND bitShiftRight(h, 54) % 4 = 0, 'tier-default', NULL)",
        "usage_pricing_tier_name": f"if({has_model} AND bitShiftRight(h, 54) % 4 = 0, 'Standard', NULL)",
        "tool_definitions": (f"mapFromArrays(if({has_tools}, {_arr(k for k, _ in _TOOL_DEFS)}, []), "
                             f"if({has_tools}, {_arr(v for _, v in _TOOL_DEFS)}, []))"),
        "tool_calls": f"if({has_tools}, {_arr(_TOOL_CALLS)}, [])",
        "tool_call_names": f"if({has_tools}, ['get_weather'], [])",
        "input": input_,
        "output": output,
        # the hard value comes first so that every row carries one (the slice keeps 1..4 entries)
        "metadata_names": "arraySlice(['note', 'source', 'attempt', 'customer'], 1, 1 + bitShiftRight(h, 60) % 4)",
        "metadata_values": (f"arraySlice([arrayElement({hard}, 1 + (n * 13 + 1) % {L}), 'seed', "
                            "toString(bitShiftRight(h, 10) % 5), concat('cust-', toString(p))], "
                            "1, 1 + bitShiftRight(h, 60) % 4)"),
        "experiment_id": f"if({is_exp}, concat('exp-', toString(bitShiftRight(th, 2) % 7)), '')",
        "experiment_name": (f"if({is_exp}, concat('experiment #', toString(bitShiftRight(th, 2) % 7), "
                            "', \"baseline\"'), '')"),
        "experiment_metadata_names": f"if({is_exp}, ['model', 'run'], [])",
        "experiment_metadata_values": f"if({is_exp}, ['gpt-4o', toString(bitShiftRight(th, 2) % 7)], [])",
        "experiment_description": f"if({is_exp}, arrayElement({hard}, 1 + bitShiftRight(th, 5) % {L}), '')",
        "experiment_dataset_id": f"if({is_exp}, concat('ds-', toString(bitShiftRight(th, 2) % 3)), '')",
        "experiment_item_id": f"if({is_exp}, concat('item-', toString(bitShiftRight(th, 6) % 1000)), '')",
        "experiment_item_version": f"if({is_exp}, {t_of('root_us - 86400000000')}, NULL)",
        "experiment_item_expected_output": (f"if({is_exp}, arrayElement({hard}, "
                                            f"1 + bitShiftRight(th, 9) % {L}), '')"),
        "experiment_item_metadata_names": f"if({is_exp}, ['difficulty'], [])",
        "experiment_item_metadata_values": (f"if({is_exp}, "
                                            "[arrayElement(['easy', 'hard'], 1 + bitShiftRight(th, 11) % 2)], [])"),
        "experiment_item_root_span_id": f"if({is_exp}, {span_of('n0')}, '')",
        "source": "if(bitShiftRight(th, 42) % 3 = 0, 'ingestion-api-dual-write', 'otel-dual-write')",
        "service_name": "arrayElement(['chat-api', 'rag-worker', 'support-bot'], 1 + p % 3)",
        "service_version": "concat('1.', toString(p % 4), '.', toString(bitShiftRight(th, 46) % 10))",
        "scope_name": ("arrayElement(['langfuse-sdk', 'openinference.instrumentation.openai', 'ai'], "
                       "1 + bitShiftRight(h, 6) % 3)"),
        "scope_version": "arrayElement(['3.8.1', '0.1.12', '4.3.2'], 1 + bitShiftRight(h, 6) % 3)",
        "telemetry_sdk_language": f"arrayElement({_arr(s[2] for s in _SDKS)}, {sdk})",
        "telemetry_sdk_name": f"arrayElement({_arr(s[3] for s in _SDKS)}, {sdk})",
        "telemetry_sdk_version": f"arrayElement({_arr(s[4] for s in _SDKS)}, {sdk})",
        "blob_storage_file_path": "concat('proj-', toString(p), '/otel/', trace_id, '/', span_id, '.json')",
        "event_bytes": f"toUInt64(length({input_}) + length({output}) + 512)",
        "created_at": t_of("ingest_us"),
        "updated_at": t_of(ev_us),
        "event_ts": t_of(ev_us),
        "is_deleted": "toUInt8(ver = 2)",
        "ingestion_api_key": "concat('pk-lf-', leftPad(toString(p), 4, '0'), '-seed')",
        "ingestion_sdk_name": f"arrayElement({_arr(s[0] for s in _SDKS)}, {sdk})",
        "ingestion_sdk_version": f"arrayElement({_arr(s[1] for s in _SDKS)}, {sdk})",
    }
    missing = [c.name for c in INSERT_COLUMNS if c.name not in exprs]
    extra = sorted(set(exprs) - {c.name for c in INSERT_COLUMNS})
    if missing or extra:  # pragma: no cover - guards the registry/generator pairing
        raise RuntimeError(f"seed generator out of sync with the registry: missing={missing} extra={extra}")
    select_list = ",\n    ".join(f"{exprs[c.name]} AS `{c.name}`" for c in INSERT_COLUMNS)
    return f"SELECT\n    {select_list}\nFROM ({inner})"


def insert_sql(table: str, database: str | None = None, **kw) -> str:
    cols = ", ".join(f"`{c.name}`" for c in INSERT_COLUMNS)
    # optimize_on_insert = 0: one INSERT never holds two versions of a key, so the insert-time
    # ReplacingMergeTree pass (a collapse over every sorted block) is pure cost (measured ≈2x on inserts).
    threads = max(1, os.cpu_count() or 1)
    return (f"INSERT INTO {qualified_name(table, database)} ({cols})\n"
            f"SETTINGS optimize_on_insert = 0, max_insert_threads = {threads}\n"
            f"{_select_sql(**kw)}")


def seed(client, table: str, projects: int, days: int, events_per_day: int, start: dt.date | None = None,
         seed: int = 0, *, database: str | None = None, replace: bool = False,
         large_inputs_per_project: int = 2, chunk_rows: int = DEFAULT_CHUNK_ROWS,
         stop_merges: bool = True) -> SeedStats:
    """Fill `table` (an existing events_full-shaped table, `t` or `db.t`) with synthetic events.

    `events_per_day` spans per project per UTC day for `projects` projects (`proj-1` ... `proj-N`) over
    `days` consecutive days starting at `start` (default: today (UTC) minus `days`, so every seeded day
    is a complete past day). Raises SeedConflictError if the table already has rows of those projects in
    that range, unless `replace=True`. Returns SeedStats with the counts and the measured insert rate.
    """
    if not (1 <= projects <= MAX_PROJECTS):
        raise ValueError(f"projects must be in 1..{MAX_PROJECTS}, got {projects}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not (1 <= events_per_day <= MAX_EVENTS_PER_DAY):
        raise ValueError(f"events_per_day must be in 1..{MAX_EVENTS_PER_DAY}, got {events_per_day}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if large_inputs_per_project < 0:
        raise ValueError("large_inputs_per_project must be >= 0")
    start = start or default_start(days)
    if isinstance(start, dt.datetime):
        start = start.date()
    first_day_num = (start - dt.date(1970, 1, 1)).days
    if not (0 <= first_day_num and first_day_num + days < 2**16):
        raise ValueError(f"start {start} out of the supported range")
    name = qualified_name(table, database)
    pids = tuple(project_id(i) for i in range(1, projects + 1))
    day_list = tuple(start + dt.timedelta(days=i) for i in range(days))
    t_from = dt.datetime.combine(start, dt.time())
    t_to = t_from + dt.timedelta(days=days)
    range_where = (f"project_id IN ({', '.join(sql_literal(x) for x in pids)}) "
                   f"AND start_time >= toDateTime64({sql_literal(t_from.isoformat(sep=' '))}, 6, 'UTC') "
                   f"AND start_time < toDateTime64({sql_literal(t_to.isoformat(sep=' '))}, 6, 'UTC')")

    existing = int(client.command(f"SELECT count() FROM {name} WHERE {range_where}"))
    replaced = 0
    if existing:
        if not replace:
            raise SeedConflictError(
                f"{name} already has {existing} rows for projects {pids[0]}..{pids[-1]} between "
                f"{t_from.date()} and {t_to.date()} (exclusive); seeding again would double them. "
                "Drop the table, seed another range, or pass replace=True.")
        # A mutation needs the background executor: make sure an earlier seed's STOP MERGES is lifted.
        client.command(f"SYSTEM START MERGES {name}")
        client.command(f"ALTER TABLE {name} DELETE WHERE {range_where} SETTINGS mutations_sync = 2")
        replaced = existing
    if stop_merges:
        client.command(f"SYSTEM STOP MERGES {name}")

    common = dict(first_day_num=first_day_num, days=days, events_per_day=events_per_day, seed=seed,
                  large_per_project=min(large_inputs_per_project, max(events_per_day - 1, 0)))
    total = projects * days * events_per_day
    counts = {0: 0, 1: 0, 2: 0}
    inserts = 0
    t0 = time.perf_counter()
    # base rows: one INSERT per chunk of ≤ chunk_rows rows; then the versions (≈6% of the rows) in their
    # own INSERTs, so they land in separate parts exactly like a later re-ingestion would.
    for versions, step in ((False, chunk_rows), (True, chunk_rows * 16)):
        for lo in range(0, total, step):
            hi = min(total, lo + step)
            client.command(insert_sql(table, database, lo=lo, hi=hi, versions=versions, **common))
            inserts += 1
    seconds = time.perf_counter() - t0
    # chDB's INSERT summary carries no written_rows: count the versioned spans from the generator itself
    # (ids only, cheap), and check the table when merges are stopped (then count() must match exactly).
    counts[0] = total
    counts[1], counts[2] = _version_counts(client, total=total, **common)
    rows = sum(counts.values())
    if stop_merges:
        found = int(client.command(f"SELECT count() FROM {name} WHERE {range_where}"))
        if found != rows:
            raise RuntimeError(f"seed wrote {found} rows into {name}, expected {rows}")
    large = projects * common["large_per_project"]
    return SeedStats(
        table=name, project_ids=pids, days=day_list, time_from=t_from, time_to=t_to,
        events_per_day=events_per_day, seed=seed, base_rows=total, updated_rows=counts[1],
        deleted_rows=counts[2], large_inputs=large, rows_inserted=rows, seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else float("inf"), replaced_rows=replaced,
        inserts=inserts,
    )


def _version_counts(client, *, total: int, first_day_num: int, days: int, events_per_day: int, seed: int,
                    large_per_project: int) -> tuple[int, int]:
    """(updated, deleted) span counts the generator produces for global rows [0, total)."""
    k_span = _seed_keys(seed)[0]
    sql = f"""
SELECT countIf({UPDATED_SQL}), countIf({DELETED_SQL})
FROM (
    SELECT {_span_expr('n', k_span)} AS span_id
    FROM (
        SELECT toUInt32(1 + intDiv(number, {days * events_per_day})) AS p,
               toUInt32({first_day_num} + intDiv(number, {events_per_day}) % {days}) AS dnum,
               toUInt64(number % {events_per_day}) AS n
        FROM numbers({total})
    )
)"""
    upd, dele = client.query(sql).result_rows[0]
    return int(upd), int(dele)
