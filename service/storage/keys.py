"""Every Redis key and stream name the service uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.partitioning import partition_stream

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["Keys", "Partition", "partitions"]


@dataclass(frozen=True, slots=True)
class Keys:
    """State key names of one partition.

    With a hash tag (`runsteps:{3}:run:<id>`) every key of partition 3 shares the slot of
    its streams (`runsteps.events:{3}`, ...), so each commit script stays single-slot on
    Redis Cluster.
    """

    prefix: str
    tag: str | None = None

    @property
    def _base(self) -> str:
        return self.prefix if self.tag is None else f"{self.prefix}:{{{self.tag}}}"

    def run(self, run_id: str) -> str:
        """Hash of a run: each step's state as `@<step id>`, thread and assistant ids (`t`,
        `a`), steps in progress (`n`) and usage totals."""
        return f"{self._base}:run:{run_id}"

    @property
    def failures(self) -> str:
        """Hash: pending entry id -> its last processing error (for the delivery cap)."""
        return f"{self._base}:failures"

    @property
    def budgets(self) -> str:
        """Sorted set: `<source letter>:<run id>` -> when a run in progress passes the
        seconds budget (RUNSTEPS_BUDGET_SECONDS)."""
        return f"{self._base}:budgets"

    @property
    def stalls(self) -> str:
        """Sorted set: run and step (`store.stall_member`) -> unix deadline for a stall."""
        return f"{self._base}:stalls"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its three streams and its state keys, all in one cluster slot."""

    index: int
    count: int
    source_stream: str
    derived_stream: str
    dlq_stream: str
    keys: Keys


def partitions(settings: Settings) -> tuple[Partition, ...]:
    """The partitions of a deployment: `<stream>:{p}` names when partitioned or clustered."""
    n = settings.partitions
    tagged = settings.cluster or n > 1
    return tuple(
        Partition(
            index=p,
            count=n,
            source_stream=partition_stream(settings.source_stream, p, tagged),
            derived_stream=partition_stream(settings.derived_stream, p, tagged),
            dlq_stream=partition_stream(settings.dlq_stream, p, tagged),
            keys=Keys(settings.key_prefix, str(p) if tagged else None),
        )
        for p in range(n)
    )
