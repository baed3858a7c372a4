"""Test helpers: waiting on conditions with a deadline (never bare sleeps), stream reads."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from service.core.layout import STEP_PREFIX
from service.core.state import encode_run_state, encode_state
from service.edge.metrics import Metrics
from service.settings import Settings
from service.storage.pending import StreamEntries

if TYPE_CHECKING:
    from service.worker.app import Worker


def apart(settings: Settings, suffix: str) -> Settings:
    """`settings` with streams and state keys of their own, beside the test's: a second
    deployment on the same Redis."""
    return settings.model_copy(
        update={
            "source_stream": settings.source_stream + suffix,
            "derived_stream": settings.derived_stream + suffix,
            "dlq_stream": settings.dlq_stream + suffix,
            "key_prefix": settings.key_prefix + suffix,
        }
    )


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def entries(redis: Redis, stream: str) -> StreamEntries:
    """Every entry of a stream, oldest first."""
    return cast("StreamEntries", await redis.xrange(stream))


async def fetch(redis: Redis, stream: str, group: str, consumer: str) -> StreamEntries:
    """XREADGROUP `>` as `consumer`: the entries a worker would be handed."""
    reply = cast("Any", await redis.xreadgroup(group, consumer, {stream: ">"}, count=1000))
    return cast("StreamEntries", reply[0][1] if reply else [])


async def read_json(redis: Redis, stream: str) -> list[dict[str, Any]]:
    """Every entry's `data` field of a stream, parsed as JSON (plain, any language)."""
    return [json.loads(f[b"data"]) for _, f in await entries(redis, stream)]


async def outcome_counts(redis: Redis, derived_stream: str, dlq_stream: str) -> Counter[str]:
    """Derived events by type, plus the DLQ's length as "dlq": what SAMPLE_EXPECTED counts."""
    counts = Counter(e["type"] for e in await read_json(redis, derived_stream))
    counts["dlq"] = await redis.xlen(dlq_stream)
    return counts


async def pending(redis: Redis, stream: str, group: str) -> int:
    """How many entries the group has fetched and not acked."""
    info = await redis.xpending(stream, group)
    return int(info["pending"])


async def drained(redis: Redis, stream: str, group: str) -> bool:
    """True once the group has read every entry and acked all of them."""
    groups = await redis.xinfo_groups(stream)
    g = next((g for g in groups if g["name"].decode() == group), None)
    if g is None:  # the worker has not created its group yet
        return False
    last = (await redis.xinfo_stream(stream))["last-generated-id"]
    return bool(g["last-delivered-id"] == last and g["pending"] == 0)


async def produce(redis: Redis, settings: Settings, *payloads: bytes | dict[str, Any]) -> None:
    """XADD each payload as JSON in field `data`, as any producer would."""
    for p in payloads:
        data = p if isinstance(p, bytes) else json.dumps(p).encode()
        await redis.xadd(settings.source_stream, {"data": data})


async def settle(redis: Redis, settings: Settings) -> None:
    """Wait until every produced entry is read and acked."""
    await wait_until(
        lambda: drained(redis, settings.source_stream, settings.group), what="stream drained"
    )


PAGE_SLACK = 32
"""Steps a run query's page may hold past its limit: HSCAN returns a hash bucket whole, and a
bucket's chain is a handful of fields at the hash's load factor."""


async def seed_big_run(redis: Redis, run_key: str, steps: int) -> None:
    """A run of `steps` ended steps, written straight into its state hash (in the commit
    script's format) in a few large HSETs: a huge run in well under a second."""
    state = encode_state("completed", 1_700_000_000, "tool_calls", ended_at=1_700_000_002)
    pipe = redis.pipeline(transaction=False)
    for start in range(0, steps, 10_000):
        fields = {
            f"{STEP_PREFIX}step_{i:06d}": state for i in range(start, min(start + 10_000, steps))
        }
        pipe.hset(run_key, mapping=cast("Any", fields))
    pipe.hset(run_key, mapping={"r": encode_run_state("completed", 1_700_000_000), "n": 0})
    await pipe.execute()


Response = tuple[int, dict[str, str], bytes]
"""An HTTP answer: (status, headers, body)."""


async def request(
    base: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    """One HTTP/1.1 request on a fresh connection: (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def answers(base: str, path: str, status: int) -> Callable[[], Awaitable[bool]]:
    """A check for wait_until: `path` answers with `status`."""

    async def check() -> bool:
        return (await request(base, path))[0] == status

    return check


async def xadd_raw(redis: Redis, stream: str, *fields: bytes | str) -> bytes:
    """XADD an entry with `fields` (name, value, ...) as given: repeated names included,
    which redis-py's xadd, taking a dict, cannot send."""
    # redis-py leaves execute_command untyped.
    reply = await redis.execute_command("XADD", stream, "*", *fields)  # type: ignore[no-untyped-call]
    return bytes(reply)


async def scrape(worker: Worker, name: str) -> dict[tuple[str, ...], float]:
    """The samples of metric `name` a scrape of `worker`'s /metrics shows, by their label
    values (in the order of the label names, sorted)."""
    metrics = Metrics(worker.telemetry, lambda: worker.redis, worker.parts, worker.settings.group)
    exposition = (await metrics.render()).decode()
    return {
        tuple(v for _, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    }
