"""Benchmarks for `ingest` (scripts/bench): measured figures beside the targets of issues 3, 4 and 7."""
