"""Dead letters: the entry the DLQ keeps for each source entry the worker cannot process,
and the replay that re-submits them once their cause is fixed."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, cast

from service.storage.scripts import DEADLETTER

if TYPE_CHECKING:
    from service.core.batch import DeadLetter
    from service.storage.client import PartitionClient
    from service.storage.pending import StreamEntries

__all__ = ["dead_letter_call", "replay_dlq"]

log = logging.getLogger("runsteps.deadletters")


def dead_letter_call(pipe: Any, client: PartitionClient, dead: DeadLetter) -> None:
    """Queue on `pipe` the script that acks `dead` and, if that ack took it off the pending
    list, writes its DLQ entry: `data` as it was, the reason, and every other field kept
    beside as `field:<name>` (an entry without `data` loses nothing)."""
    s, p = client.settings, client.part
    args: list[Any] = [s.group, dead.source_id, s.dlq_maxlen, "data", dead.fields.get(b"data", b"")]
    args += ["error", dead.error, "source_id", dead.source_id, "source_stream", p.source_stream]
    for name, value in dead.fields.items():
        if name != b"data":
            args += [b"field:" + name, value]
    pipe.evalsha(DEADLETTER.sha, 2, p.source_stream, p.dlq_stream, *args)


def _dead_letter_kind(fields: dict[bytes, bytes]) -> str | None:
    """The `kind` of a DLQ entry's error, or None when its `error` field is unreadable."""
    try:
        error = json.loads(fields.get(b"error", b"{}") or b"{}")
    except ValueError:
        return None
    kind = error.get("kind") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


async def replay_dlq(
    conn: PartitionClient, kind: str | None = None, limit: int | None = None
) -> tuple[int, int]:
    """Re-submit dead-lettered entries to the source stream, oldest first.

    Each entry is XADDed back (original `data` and fields, plus `replayed_from`) and XDELed
    from the DLQ in one MULTI/EXEC, so it is removed only once re-submitted. An entry whose
    `error` is unreadable is skipped, logged and left in place. Returns (replayed, skipped).
    """
    part, redis = conn.part, conn.redis
    replayed, skipped, cursor = 0, 0, "-"
    while limit is None or replayed < limit:
        page = cast("StreamEntries", await redis.xrange(part.dlq_stream, cursor, "+", count=200))
        if not page:
            break
        cursor = "(" + page[-1][0].decode()
        pipe = conn.pipeline(transaction=True)
        for dlq_id, fields in page:
            found = _dead_letter_kind(fields)
            if found is None:
                log.warning("DLQ entry %s has an unreadable error field; left in place", dlq_id)
                skipped += 1
                continue
            if kind is not None and found != kind:
                continue
            if limit is not None and replayed >= limit:
                break
            entry: dict[bytes, bytes] = {
                k.removeprefix(b"field:"): v for k, v in fields.items() if k.startswith(b"field:")
            }
            if found != "missing_data":
                entry[b"data"] = fields.get(b"data", b"")
            entry[b"replayed_from"] = dlq_id
            pipe.xadd(part.source_stream, cast("Any", entry))
            pipe.xdel(part.dlq_stream, dlq_id)
            replayed += 1
        await pipe.execute()
    return replayed, skipped
