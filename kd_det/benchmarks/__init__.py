"""Benchmarks: one module per subcommand of tools/benchmark.py."""
