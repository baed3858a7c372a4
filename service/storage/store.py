"""The tracked state's writes: the batch commit, dead letters, and stalled steps.

Everything that changes tracked state goes through the scripts called here; nothing else
knows a script's arguments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from service.storage.scripts import COMMIT, DEADLETTER, STALL, STALL_PRUNE

if TYPE_CHECKING:
    from service.core.ops import Op
    from service.storage.client import PartitionClient

__all__ = ["DeadLetter", "StepRef", "Store"]

log = logging.getLogger("runsteps.store")

StepRef = tuple[str, str]
"""(run id, step id): where a step's state is kept."""

_PRUNE_PAGES = 20
"""Pages of prunable stall index members one scan removes at most before it gives up until
the next scan: a pass stays short however many there are."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A source entry that goes to the DLQ, with the reason."""

    source_id: bytes
    fields: dict[bytes, bytes]
    error: str  # the rejection as JSON, the DLQ entry's `error`
    kind: str  # its DeadLetterKind, for counting


def _stall_ref(member: str) -> StepRef | None:
    size, sep, rest = member.partition(":")
    if not (sep and size.isdigit() and int(size) <= len(rest)):
        return None
    return rest[: int(size)], rest[int(size) :]


def _agreeing(ops: list[Op]) -> list[tuple[str, str, list[Op]]]:
    """A run's ops in arrival order, cut where one names another thread or assistant than
    those before it: (thread, assistant, ops) groups, each checked against the run's once.
    Ops naming neither (Responses items) join any group."""
    groups: list[tuple[str, str, list[Op]]] = []
    thread = assistant = ""
    group: list[Op] = []
    for op in ops:
        if (op.thread_id and thread and op.thread_id != thread) or (
            op.assistant_id and assistant and op.assistant_id != assistant
        ):
            groups.append((thread, assistant, group))
            thread = assistant = ""
            group = []
        group.append(op)
        thread = thread or op.thread_id
        assistant = assistant or op.assistant_id
    groups.append((thread, assistant, group))
    return groups


class Store:
    """One partition's tracked state, written by scripts."""

    def __init__(self, conn: PartitionClient) -> None:
        self.conn = conn

    def _commit_call(self, pipe: Any, runs: dict[str, list[Op]], acks: list[bytes]) -> None:
        conn = self.conn
        s, p, run_key = conn.settings, conn.part, conn.keys.run
        keys = [p.derived_stream, p.source_stream, conn.keys.stalls]
        args: list[Any] = [s.group, s.derived_maxlen, s.state_ttl_s, len(acks), *acks]
        for run_id, ops in runs.items():
            for thread, assistant, group in _agreeing(ops):
                keys.append(run_key(run_id))
                args += (len(group), run_id, thread, assistant)
                for op in group:
                    args += (op.source_id, op.head, op.field, op.state, op.start, op.end)
                    args += (op.key, op.extra)
        pipe.evalsha(COMMIT.sha, len(keys), *keys, *args)

    def _dead_letter_call(self, pipe: Any, dead: DeadLetter) -> None:
        s, p = self.conn.settings, self.conn.part
        args: list[Any] = [
            s.group,
            dead.source_id,
            s.dlq_maxlen,
            "data",
            dead.fields.get(b"data", b""),
        ]
        args += ["error", dead.error, "source_id", dead.source_id, "source_stream", p.source_stream]
        for name, value in dead.fields.items():
            if name != b"data":  # kept beside: an entry without `data` loses nothing
                args += [b"field:" + name, value]
        pipe.evalsha(DEADLETTER.sha, 2, p.source_stream, p.dlq_stream, *args)

    async def commit(
        self, runs: dict[str, list[Op]], acks: list[bytes], dead: list[DeadLetter]
    ) -> str:
        """Apply a batch in one round trip: the commit script, then one script per dead letter.

        `runs` holds each run's ops in arrival order, acked atomically with their effects
        (unless their identity mismatched: action 'I'); `acks` the ids of the batch's other
        entries with no effects (ignored events). Returns the action letter of every op,
        runs in `runs` order. Re-running after NOSCRIPT is safe: both
        scripts are idempotent per source entry.
        """

        def build(pipe: Any) -> None:
            if runs or acks:
                self._commit_call(pipe, runs, acks)
            for d in dead:
                self._dead_letter_call(pipe, d)

        results = await self.conn.execute(build)
        return cast("bytes", results[0]).decode() if runs or acks else ""

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

    async def publish_stall(self, member: str, run_id: str, step_id: str, event: bytes) -> bool:
        """Publish `event` if this call takes the step off the stall index (once overall)."""
        conn = self.conn
        keys = [conn.keys.stalls, conn.keys.run(run_id), conn.part.derived_stream]
        args: list[Any] = [member, step_id, conn.settings.derived_maxlen, event]
        [published] = await conn.execute(lambda pipe: pipe.evalsha(STALL.sha, 3, *keys, *args))
        return bool(published)
