"""Run in a fresh process: stream a synthetic result of N rows x 1 KB and print bytes and peak RSS.

Usage: python stream_memory_probe.py CHDB_DIR ROWS MODE   (MODE: csv | jsonl | arrow)
"""

import json
import resource
import sys

from exports_pipeline.resources.clickhouse import ClickHouseResource

path, rows, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ch = ClickHouseResource(url=f"chdb://{path}")
sql = "SELECT number, repeat('x', 1000) AS payload FROM numbers({n:UInt64})"
total = 0
if mode == "arrow":
    with ch.arrow_batches(sql, {"n": rows}) as batches:
        for batch in batches:
            total += batch.nbytes
else:
    with ch.stream(sql, "CSV" if mode == "csv" else "JSONEachRow", {"n": rows}) as chunks:
        for chunk in chunks:
            total += len(chunk)
print(json.dumps({"bytes": total, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
