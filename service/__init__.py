"""runsteps: tracks run-step lifecycles from a Redis stream and publishes derived events."""

from __future__ import annotations

from .app import Worker, build_worker
from .settings import Settings

__all__ = ["Settings", "Worker", "build_worker"]
