"""One partition's batches, in order: each built as it arrives, while the previous one's
commit runs in Redis, then committed once that one is done.

Commits still go one at a time and in order, each deciding on the state the one before
left; only decoding overlaps (bench/README.md measures what that buys). A commit that Redis
failed leaves its entries pending (claimed later): said here, and the next batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.core.batch import Entry
    from service.worker.process import Processor

__all__ = ["Pipeline"]

log = logging.getLogger("runsteps.pipeline")


class Pipeline:
    """The batches of one partition: one commit in flight at most."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self._in_flight: asyncio.Task[dict[bytes, str]] | None = None

    async def submit(self, entries: list[Entry]) -> None:
        """Build `entries`' batch now, then start its commit once the previous one is done
        (returns without waiting for it)."""
        batch = self.processor.build(entries)
        await self.drain()
        self._in_flight = asyncio.create_task(self.processor.commit(entries, batch))

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the commit in flight, if any."""
        commit, self._in_flight = self._in_flight, None
        if commit is None:
            return
        try:
            await asyncio.wait_for(commit, timeout_s)
        except Exception as exc:  # not an entry's fault (commit() isolates those)
            log.warning("a batch's commit failed (%s); its entries stay pending", exc)
