"""Every Redis key name the service uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix.

    All state keys of one deployment share the prefix; a hash tag can be added later for
    Redis Cluster so that a partition's state, its source stream and its derived stream
    live in one slot and the commit script stays single-slot.
    """

    prefix: str

    def step(self, step_id: str) -> str:
        """Hash with one step's tracked state."""
        return f"{self.prefix}:step:{step_id}"

    def run(self, run_id: str) -> str:
        """Hash with a run's cumulative usage totals."""
        return f"{self.prefix}:run:{run_id}"

    def run_steps(self, run_id: str) -> str:
        """Set of the step ids seen for a run."""
        return f"{self.prefix}:run:{run_id}:steps"

    @property
    def failures(self) -> str:
        """Hash: pending entry id -> its last processing error (for the delivery cap)."""
        return f"{self.prefix}:failures"

    @property
    def stalls(self) -> str:
        """Sorted set: step id -> unix deadline after which it counts as stalled."""
        return f"{self.prefix}:stalls"
