"""Dead letters: the entry the DLQ keeps for each source entry the worker cannot process,
and the replay that re-submits them once their cause is fixed.

A DLQ entry (written by deadletter.lua, `dead_letter_call`) holds the source entry's `data` in
`data` (empty when it had none), every other source field as `field:<name>` (a later copy of
a repeated name renamed `\\x00dup<n>:<name>`, service/storage/replies.py), and the worker's
own `error`, `source_id`, `source_stream`. Whoever can write the DLQ can add fields to an
entry, so a replay re-submits only what the source entry can have had, and refuses an entry
that says more than the worker writes or has nothing to re-submit.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from contracts.derived import DeadLetterKind
from service.core.decode import DATA_FIELD
from service.storage.scripts import DEADLETTER

if TYPE_CHECKING:
    from service.core.batch import DeadLetter
    from service.storage.client import PartitionClient
    from service.storage.pending import StreamEntries

__all__ = ["Replay", "dead_letter_call", "replay_dlq", "source_fields"]

log = logging.getLogger("runsteps.deadletters")

_FIELD = b"field:"
_REPLAYED_FROM = b"replayed_from"
_COPY = re.compile(rb"\x00dup\d+:(.*)", re.DOTALL)  # a repeated name's later copy
_PAGE = 200


class Refused(ValueError):
    """A DLQ entry that cannot be replayed: why, in a few words."""


@dataclass
class Replay:
    """What a replay did: entries re-submitted, and those left in the DLQ, with why."""

    replayed: int = 0
    unreadable: int = 0  # the `error` field is not the worker's JSON: the kind is unknown
    refused: Counter[str] = field(default_factory=Counter)  # by reason

    def add(self, other: Replay) -> None:
        """Count `other`'s entries in this one (one replay per partition)."""
        self.replayed += other.replayed
        self.unreadable += other.unreadable
        self.refused.update(other.refused)


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


def source_fields(kind: str, fields: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The source entry's fields, as a DLQ entry of `kind` recorded them, in order (`data`
    first; repeated names repeated); raises Refused when the entry cannot come from one.

    A `missing_data` entry's source had no `data` (its `data` is empty) and so no copy of
    it either; every other kind's source had one, kept in `data`. No source's `data` is
    ever a `field:data`: that and a `data` where there was none are someone else's writing.
    """
    missing = kind == DeadLetterKind.MISSING_DATA
    kept = [(name.removeprefix(_FIELD), v) for name, v in fields.items() if name.startswith(_FIELD)]
    names = {name for name, _ in kept} | (set() if missing else {DATA_FIELD})
    out: list[tuple[bytes, bytes]] = []
    if not missing:
        if DATA_FIELD not in fields:
            raise Refused("no data field")
        out.append((DATA_FIELD, fields[DATA_FIELD]))
    elif fields.get(DATA_FIELD):
        raise Refused("missing_data entry with data")
    for name, value in kept:
        if name == DATA_FIELD:
            raise Refused("field:data (a source's data is kept in data)")
        copy = _COPY.fullmatch(name)
        # A later copy of a name the entry has; else a name that only looks like one.
        original = copy.group(1) if copy and copy.group(1) in names else name
        if original == _REPLAYED_FROM:
            continue  # an earlier replay's mark: this replay writes its own
        out.append((original, value))
    if not out:
        raise Refused("nothing to replay")
    return out


async def replay_dlq(
    conn: PartitionClient, kind: str | None = None, limit: int | None = None
) -> Replay:
    """Re-submit dead-lettered entries to the source stream, oldest first.

    Each entry is XADDed back with the fields its source had (`source_fields`) plus
    `replayed_from`, and XDELed from the DLQ in one MULTI/EXEC, so it is removed only once
    re-submitted. An entry whose `error` is unreadable, or that `source_fields` refuses, is
    logged and left in place. At most `limit` entries are re-submitted.
    """
    part, redis = conn.part, conn.redis
    done, cursor = Replay(), "-"
    while limit is None or done.replayed < limit:
        page = cast("StreamEntries", await redis.xrange(part.dlq_stream, cursor, "+", _PAGE))
        if not page:
            break
        cursor = "(" + page[-1][0].decode()
        pipe = conn.pipeline(transaction=True)
        for dlq_id, fields in page:
            found = _dead_letter_kind(fields)
            if found is None:
                log.warning("DLQ entry %s has an unreadable error field; left in place", dlq_id)
                done.unreadable += 1
                continue
            if kind is not None and found != kind:
                continue
            if limit is not None and done.replayed >= limit:
                break
            try:
                entry = source_fields(found, fields)
            except Refused as exc:
                log.warning("DLQ entry %s not replayed (%s); left in place", dlq_id, exc)
                done.refused[str(exc)] += 1
                continue
            entry.append((_REPLAYED_FROM, dlq_id))
            # XADD itself: redis-py's xadd takes a dict, which cannot repeat a name.
            pipe.execute_command(
                "XADD", part.source_stream, "*", *[x for pair in entry for x in pair]
            )
            pipe.xdel(part.dlq_stream, dlq_id)
            done.replayed += 1
        await pipe.execute()
    return done
