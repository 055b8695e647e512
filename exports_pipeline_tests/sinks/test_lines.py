"""The API sinks' shared line stream (`engine/lines.py`): ClickHouse's TabSeparated chunks cut at arbitrary
bytes come out as whole unescaped lines; a stream cut inside a line is an error, never a short window."""

from __future__ import annotations

import pytest

from exports_pipeline.engine.lines import decoded_blocks


def test_lines_split_across_chunks_and_escapes_are_rejoined_and_unescaped():
    # `{"a":"x\\"y"}` (JSON with an escaped quote) and `{"b":"it's"}` as TabSeparated renders them.
    stream = b'{"a":"x\\\\"y"},\n{"b":"it\\\'s"},\n'
    for cut in range(1, len(stream)):
        blocks = list(decoded_blocks([stream[:cut], stream[cut:]]))
        assert b"".join(blocks) == b'{"a":"x\\"y"},\n{"b":"it\'s"},\n', cut
        assert all(block.endswith(b"\n") for block in blocks)


def test_a_line_over_many_chunks_is_whole_in_one_block():
    line = b"x" * 10_000
    chunks = [line[i:i + 7] for i in range(0, len(line), 7)] + [b"\nnext", b"\n"]
    assert list(decoded_blocks(chunks)) == [line + b"\n", b"next\n"]


def test_a_stream_ending_inside_a_line_is_an_error():
    with pytest.raises(ValueError, match="ended inside a line"):
        list(decoded_blocks([b"whole\n", b"half"]))
