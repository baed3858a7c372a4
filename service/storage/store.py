"""The tracked state's writes: the batch commit, dead letters, and stalled steps.

Everything that changes tracked state goes through the scripts called here. The commit's
keys and arguments are built, and its reply read, by `storage.protocol`; a dead letter's by
`storage.deadletters`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from service.storage.deadletters import dead_letter_call
from service.storage.protocol import Committed, commit_call
from service.storage.scripts import BUDGET, COMMIT, STALL, STALL_PRUNE

if TYPE_CHECKING:
    from service.core.batch import DeadLetter
    from service.core.ops import Op
    from service.storage.client import PartitionClient

__all__ = ["StepRef", "Store"]

log = logging.getLogger("runsteps.store")

StepRef = tuple[str, str]
"""(run id, step id): where a step's state is kept."""

_PRUNE_PAGES = 20
"""Pages of prunable stall index members one scan removes at most before it gives up until
the next scan: a pass stays short however many there are."""


def _stall_ref(member: str) -> StepRef | None:
    size, sep, rest = member.partition(":")
    if not (sep and size.isdigit() and int(size) <= len(rest)):
        return None
    return rest[: int(size)], rest[int(size) :]


class Store:
    """One partition's tracked state, written by scripts."""

    def __init__(self, conn: PartitionClient) -> None:
        self.conn = conn

    async def apply(
        self, runs: dict[str, list[Op]], acks: list[bytes], dead: list[DeadLetter]
    ) -> Committed:
        """Apply a batch in one round trip: the commit script, then one script per dead letter.

        `runs` holds each run's ops in arrival order, acked atomically with their effects
        (unless their identity mismatched: IDENTITY_MISMATCH); `acks` the ids of the batch's
        other entries with no effects (ignored events). Returns every op with the action the
        script took for it, and what it closed for runs' ends. Re-running after NOSCRIPT is
        safe: both scripts are idempotent per source entry.
        """
        call = commit_call(self.conn, runs, acks) if runs or acks else None

        def build(pipe: Any) -> None:
            if call is not None:
                pipe.evalsha(COMMIT.sha, len(call.keys), *call.keys, *call.args)
            for d in dead:
                dead_letter_call(pipe, self.conn, d)

        results = await self.conn.execute(build)
        return Committed([], []) if call is None else call.read(cast("list[Any]", results[0]))

    async def commit(
        self, runs: dict[str, list[Op]], acks: list[bytes], dead: list[DeadLetter]
    ) -> str:
        """`apply`, answered as the actions' letters only, in the order of the ops sent (the
        commit script's own reply: what tests and benchmarks compare)."""
        return "".join(action for _, action in (await self.apply(runs, acks, dead)).actions)

    async def due_stalls(self, now: int, limit: int) -> tuple[list[StepRef], int]:
        """Up to `limit` (run id, step id) of steps in progress past their stall deadline, and
        how many index members were pruned on the way.

        Members that can never stall again are taken off the index here, so that however
        many there are they cannot fill the page and hide real stalls: those that name no
        run (written by an earlier build) and those whose step's state is gone (expired,
        evicted) or no longer in progress.
        """
        redis, stalls = self.conn.redis, self.conn.keys.stalls
        pruned = 0
        for _ in range(_PRUNE_PAGES):
            members = cast(
                "list[bytes]", await redis.zrangebyscore(stalls, "-inf", now, start=0, num=limit)
            )
            named: list[tuple[bytes, StepRef]] = []
            unreadable: list[bytes] = []
            for member in members:
                ref = _stall_ref(member.decode(errors="replace"))
                if ref is None:
                    unreadable.append(member)
                else:
                    named.append((member, ref))
            if unreadable:
                log.warning("dropping %d unreadable stall index members", len(unreadable))
                await redis.zrem(stalls, *unreadable)
            kept = await self._prune_stalls(named)
            pruned += len(members) - len(kept)
            if kept or len(members) < limit:
                return kept, pruned
        return [], pruned

    async def _prune_stalls(self, named: list[tuple[bytes, StepRef]]) -> list[StepRef]:
        """Remove the members whose step is not in progress; the others' refs, in order."""
        if not named:
            return []
        conn = self.conn
        keys = [conn.keys.stalls, *(conn.keys.run(run_id) for _, (run_id, _) in named)]
        args = [part for member, (_, step_id) in named for part in (member, step_id.encode())]
        [kept] = await conn.execute(
            lambda pipe: pipe.evalsha(STALL_PRUNE.sha, len(keys), *keys, *args)
        )
        return [named[int(i) - 1][1] for i in cast("list[int]", kept)]

    async def due_budgets(self, now: float, limit: int) -> list[tuple[str, str, float]]:
        """Up to `limit` runs in progress past the seconds budget: (member, run id, when the
        budget was passed), for `publish_budget`."""
        conn = self.conn
        due = cast(
            "list[tuple[bytes, float]]",
            await conn.redis.zrangebyscore(
                conn.keys.budgets, "-inf", now, start=0, num=limit, withscores=True
            ),
        )
        return [(m.decode(), m.decode().partition(":")[2], score) for m, score in due]

    async def publish_budget(
        self, member: str, run_id: str, *, ids: bytes, budget: str, value: str, now: str
    ) -> bool:
        """Publish the seconds budget's event for a run still in progress, once overall."""
        conn = self.conn
        keys = [conn.keys.budgets, conn.keys.run(run_id), conn.part.derived_stream]
        args = [member, run_id, ids, budget, value, now, conn.settings.derived_maxlen]
        [published] = await conn.execute(lambda pipe: pipe.evalsha(BUDGET.sha, 3, *keys, *args))
        return bool(published)

    async def publish_stall(self, member: str, run_id: str, step_id: str, event: bytes) -> bool:
        """Publish `event` if this call takes the step off the stall index (once overall)."""
        conn = self.conn
        keys = [conn.keys.stalls, conn.keys.run(run_id), conn.part.derived_stream]
        args: list[Any] = [member, step_id, conn.settings.derived_maxlen, event]
        [published] = await conn.execute(lambda pipe: pipe.evalsha(STALL.sha, 3, *keys, *args))
        return bool(published)
