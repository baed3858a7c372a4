"""One partition's batches, in order: each built as it arrives, while the previous one's
commit runs in Redis, then committed once that one is done.

Commits still go one at a time and in order, each deciding on the state the one before
left; only decoding overlaps (bench/README.md measures what that buys). A commit that Redis
failed leaves its entries pending (claimed later): said here, and the next batch goes on.
A commit Redis refused for memory (maxmemory, `noeviction`) is retried in place until it
goes through or shutdown begins: the next batch waits for it, so nothing more is fetched
meanwhile (refused batches would pile up pending and, the oldest bounding the trim, keep
the recovery loop from freeing what every group has acked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import OutOfMemoryError

if TYPE_CHECKING:
    from service.core.batch import Batch, Entry
    from service.worker.process import Processor

__all__ = ["Pipeline"]

log = logging.getLogger("runsteps.pipeline")


class Pipeline:
    """The batches of one partition: one commit in flight at most."""

    def __init__(self, processor: Processor, stopping: asyncio.Event | None = None) -> None:
        self.processor = processor
        self._stopping = asyncio.Event() if stopping is None else stopping  # shutdown began
        self._in_flight: asyncio.Task[dict[bytes, str]] | None = None

    async def submit(self, entries: list[Entry]) -> None:
        """Build `entries`' batch now, then start its commit once the previous one is done
        (returns without waiting for it)."""
        batch = self.processor.build(entries)
        await self.drain()
        self._in_flight = asyncio.create_task(self._commit(entries, batch))

    async def _commit(self, entries: list[Entry], batch: Batch) -> dict[bytes, str]:
        """Commit one batch; refused for memory, commit it again, backing off."""
        backoff, refused_at = 0.05, 0.0
        while True:
            try:
                failures = await self.processor.commit(entries, batch)
            except OutOfMemoryError:
                if self._stopping.is_set():
                    raise
                if not refused_at:
                    refused_at = time.monotonic()
                    log.warning(
                        "redis refused a commit: out of memory (maxmemory); reading paused, "
                        "the commit retried until memory is freed"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if refused_at:
                log.info(
                    "commit went through after %.1fs; reading resumed",
                    time.monotonic() - refused_at,
                )
            return failures

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the commit in flight, if any."""
        commit, self._in_flight = self._in_flight, None
        if commit is None:
            return
        try:
            await asyncio.wait_for(commit, timeout_s)
        except Exception as exc:  # not an entry's fault (commit() isolates those)
            log.warning("a batch's commit failed (%s); its entries stay pending", exc)
