"""Deterministic trace and span ids: the same run and step give the same ids everywhere.

A run's trace id and every span id are derived from runsteps' own ids only, so a
redelivered or replayed derived event yields the same span (never a second trace), two
deployments fed the same events produce the same ids, and a step exported before its run
ends already names its run's span as parent. Any language can reimplement it:

* trace id: the first 16 bytes of SHA-256(`runsteps.trace|<run_id>`);
* span id: the first 8 bytes of SHA-256(`runsteps.span|<run_id>|<step_id>|<tool_call_id>`),
  `step_id` empty for the run's own span, `tool_call_id` empty but for a tool call's span;

read as big-endian unsigned integers. An all-zero id is invalid in OpenTelemetry; the one
run in 2**64 that hashes to it gets 1 instead.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

__all__ = ["span_id_for", "trace_id_for"]


def _digest(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1


# A run's ids are asked for by each of its steps: remembered for the runs seen lately.
@lru_cache(maxsize=16_384)
def trace_id_for(run_id: str) -> int:
    """The trace id of a run (its run span and every step span share it)."""
    return _digest(f"runsteps.trace|{run_id}", 16)


@lru_cache(maxsize=16_384)
def _run_span_id(run_id: str) -> int:
    return _digest(f"runsteps.span|{run_id}||", 8)


def span_id_for(run_id: str, step_id: str = "", tool_call_id: str = "") -> int:
    """The span id of a run (no step), of a step, or of one tool call of a step."""
    if not step_id and not tool_call_id:
        return _run_span_id(run_id)
    return _digest(f"runsteps.span|{run_id}|{step_id}|{tool_call_id}", 8)
