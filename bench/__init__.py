"""Benchmarks (not tests): step time and memory, against TRL at equal settings."""
