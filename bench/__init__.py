"""Speed and memory of the object-storage export, as ratios against ClickHouse-native export.

`python -m bench.run_all` (or `make bench`): prepares a seeded chDB directory under `bench/out/`, starts
moto's S3 server, runs every (case, format) in a fresh process and prints the table and the ratios.
`bench/prepare.py` holds the data set, `bench/measure.py` one measurement.
"""
