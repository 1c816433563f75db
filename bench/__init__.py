"""Benchmarks: `python -m bench` runs all of issue 7's (see bench/README.md); `python -m bench.tunnel`
measures the SSH tunnel."""
