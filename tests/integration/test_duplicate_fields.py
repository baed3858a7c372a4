"""An entry with two `data` fields is refused, on every path that reads entries.

redis-py folds an entry's fields into a dict, keeping the last of a repeated name; the
worker's clients keep the repeats (service/storage/replies.py) so decode can refuse the entry.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from service.core.decode import Rejection, decode_entry
from service.dev.sample import step
from service.settings import Settings
from service.storage.client import PartitionClient, connect
from service.storage.pending import Pending
from service.storage.replies import keep_duplicate_fields
from service.worker.app import Worker
from tests.helpers import entries, fetch, produce, read_json, settle, xadd_raw

FIRST = json.dumps(step("s_first", "in_progress", run_id="run_dup")).encode()
SECOND = json.dumps(step("s_second", "in_progress", run_id="run_dup")).encode()


async def _add_twice(redis: Redis, stream: str) -> bytes:
    """One entry with `data` twice (and another field between), as raw Redis allows."""
    return await xadd_raw(redis, stream, "data", FIRST, "x", "1", "data", SECOND)


async def test_the_subscriber_dead_letters_an_entry_with_two_data_fields(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """FastStream's read path: invalid_payload naming the field; both copies kept; no event."""
    dup_id = await _add_twice(redis, settings.source_stream)
    await produce(redis, settings, step("s_ok", "in_progress", run_id="run_ok"))
    await settle(redis, settings)
    [(_, dead)] = await entries(redis, settings.dlq_stream)
    error = json.loads(dead[b"error"])
    assert error["kind"] == "invalid_payload"
    assert "duplicate field data" in error["message"]
    assert dead[b"source_id"] == dup_id
    assert dead[b"data"] == FIRST
    assert dead[b"field:\x00dup2:data"] == SECOND  # the repeat, named by its pair's position
    assert dead[b"field:x"] == b"1"
    events = await read_json(redis, settings.derived_stream)
    assert [(e["type"], e["step_id"]) for e in events] == [("run_step.started", "s_ok")]


async def test_own_pending_and_claims_see_both_copies(
    settings: Settings, conn: PartitionClient
) -> None:
    """The recovery reads (XREADGROUP by id, XAUTOCLAIM) keep the repeat too."""
    settings = settings.model_copy(update={"claim_idle_ms": 0})
    client = connect(settings)
    try:
        pending = Pending(PartitionClient(client, settings))
        dup_id = await _add_twice(client, settings.source_stream)
        await fetch(conn.redis, settings.source_stream, settings.group, "gone")  # now pending
        for fields in (
            dict((await pending.own_pending("gone", b"0", 10))[0][1]),
            dict((await pending.autoclaim("taker", b"0-0", 10))[1][0][1]),
        ):
            assert fields[b"\x00dup2:data"] == SECOND
            decoded = decode_entry(fields, 1 << 20, 0.0)
            assert isinstance(decoded, Rejection)
            assert decoded.message == "duplicate field data: the entry has 2 'data' fields"
        assert (await pending.own_pending("taker", b"0", 10))[0][0] == dup_id
    finally:
        await client.aclose()


async def test_entries_without_repeats_read_as_before(redis_url: str, settings: Settings) -> None:
    """Marking is idempotent and leaves ordinary entries (and other fields) untouched."""
    client = keep_duplicate_fields(keep_duplicate_fields(Redis.from_url(redis_url)))
    try:
        await client.xgroup_create(settings.source_stream, settings.group, id="0", mkstream=True)
        await client.xadd(settings.source_stream, {"data": FIRST, "trace": "t1"})
        await xadd_raw(client, settings.source_stream, "data", FIRST, "data", SECOND, "data", FIRST)
        [(_, plain), (_, tripled)] = await fetch(
            client, settings.source_stream, settings.group, "c"
        )
        assert plain == {b"data": FIRST, b"trace": b"t1"}
        assert tripled == {b"data": FIRST, b"\x00dup1:data": SECOND, b"\x00dup2:data": FIRST}
    finally:
        await client.aclose()
