"""Benchmarks share the tests' op loading; shapes come from named lists in each file."""

import ptqx.ops  # noqa: F401  (defines ops, loads native kernels before timing starts)
