"""Benchmarks that print figures. Run from the repository root as modules
(``python -m bench.processors_bench …``): they share the tests' worker harness and data paths
(``tests/support/``), which the repository root on ``sys.path`` makes importable."""
