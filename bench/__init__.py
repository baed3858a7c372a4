"""Benchmarks of runsteps: throughput, latency, memory, hot path and recovery, side by side.

`python -m bench` runs everything against private loopback redis-servers and prints one
results table (also written to bench/results.md). Absolute numbers depend on the machine;
the ratios between scenarios measured in one run are the claim.
"""

from __future__ import annotations

__all__: list[str] = []
