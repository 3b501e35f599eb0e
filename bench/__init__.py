"""Benchmarks of the seclusion hub, run from the repository root (`python -m bench.ingest`)."""
