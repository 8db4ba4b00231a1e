"""Benchmark, soak and overload tooling: drives the real service over loopback and compares it with references.

`python -m bench` runs the benchmark (see docs/bench.md); `bench.soak` and `bench.overload` are the endurance runs.
Never imported by service/ or training/.
"""
