"""The Redis state store: the atomic commit and dead-letter scripts, and the reads.

Everything the service writes to Redis goes through here; nothing else knows a key name
or a script.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from hashlib import sha1
from importlib.resources import files
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

from contracts.partitioning import partition_for
from contracts.run_step import StepStatus

from .keys import Partition, partitions

if TYPE_CHECKING:
    from collections.abc import Callable

    from .settings import Settings

__all__ = [
    "Commit",
    "CommitResult",
    "DeadLetter",
    "StepRef",
    "Store",
    "StreamEntries",
    "Tracked",
    "find_run",
    "find_step",
    "read_streams",
]


log = logging.getLogger("runsteps.store")


@dataclass(frozen=True, slots=True)
class _Script:
    """A Lua script run by EVALSHA; loaded on every node up front and again after NOSCRIPT."""

    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> _Script:
        source = files("service").joinpath(name).read_text()
        return cls(source, sha1(source.encode()).hexdigest())


COMMIT = _Script.load("commit.lua")
DEADLETTER = _Script.load("deadletter.lua")
STALL = _Script.load("stall.lua")

# Short field names of the state string; `inspect` and the query API show readable ones.
FIELD_NAMES = {
    "s": "status",
    "v": "version",
    "x": "rejected",
    "c": "created_at",
    "d": "ended_at",
    "y": "type",
    "up": "prompt_tokens",
    "uc": "completion_tokens",
    "ut": "total_tokens",
    "e": "last_error_code",
}


USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "steps_counted")
"""The run hash's cumulative usage fields (summed in the commit script)."""

StepRef = tuple[str, str]
"""(run id, step id): where a step's state is kept."""

STEP_FIELD = "@"
"""A step's field in its run's hash is this plus its id (commit.lua and stall.lua agree)."""


def stall_member(run_id: str, step_id: str) -> str:
    """A step's member in the stall index: its run id (length-prefixed) and its id."""
    return f"{len(run_id)}:{run_id}{step_id}"


def _stall_ref(member: str) -> StepRef | None:
    size, sep, rest = member.partition(":")
    if not (sep and size.isdigit() and int(size) <= len(rest)):
        return None
    return rest[: int(size)], rest[int(size) :]


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's Python packer.

    redis-py's asyncio connection packs in Python, re-joining its buffer once per argument:
    a 500-entry commit (thousands of arguments) took ~7 ms to pack, hiredis ~1 ms (bench/).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # 'XINFO GROUPS': separate arguments
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not pack: redis-py's packer, and its error
            return cast("list[bytes]", super().pack_command(*args))  # type: ignore[misc]


_FAST: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def fast_packing(pool: ConnectionPool) -> ConnectionPool:
    """Make `pool`'s new connections pack with hiredis; keeps TLS or unix socket classes."""
    cls = pool.connection_class
    if not issubclass(cls, _HiredisPacking):
        fast = _FAST.get(cls)
        if fast is None:
            fast = _FAST[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
        pool.connection_class = fast
    return pool


class CommitResult(IntEnum):
    """What the commit script did with one entry."""

    CONFLICT = 0  # the step's version moved: re-read and decide again
    DONE = 1  # effects written and the entry acked, atomically
    ALREADY = 2  # another consumer acked this entry first: nothing written


STATE_FIELDS = ("v", "s", "x", "c", "y", "d", "up", "uc", "ut", "e")
"""A step's state is one string of these fields joined by '|', kept in its run's hash (the
run id is the key). The version comes first: the commit script compares it. Short enough
(about 45 bytes) for Redis to keep a run's hash as one compact listpack."""


# One-letter codes for the enums stored per step: bytes paid by every tracked step, and a
# state string over 64 bytes would turn its whole run's hash from a listpack into a table.
_CODES = {
    "s": {"in_progress": "i", "completed": "c", "failed": "f", "cancelled": "x",
          "expired": "e", "incomplete": "n"},
    "y": {"message_creation": "m", "tool_calls": "t"},
    "e": {"server_error": "s", "rate_limit_exceeded": "r"},
}  # fmt: skip
_CODES["x"] = _CODES["s"]
_NAMES = {field: {v: k for k, v in codes.items()} for field, codes in _CODES.items()}


def _map(field: str, value: str, table: dict[str, dict[str, str]]) -> str:
    codes = table.get(field)
    if codes is None or not value:
        return value
    return ",".join(codes[v] for v in value.split(","))


_STATUS, _TYPE, _ERROR = _CODES["s"], _CODES["y"], _CODES["e"]


def encode_state(record: Mapping[str, str]) -> str:
    """One step's state as the string the store keeps (fields in STATE_FIELDS order).

    Spelled out field by field: it runs once per write on the worker's hot path. Two more
    savings, as every byte is paid once per tracked step: the end time is kept as seconds
    after the creation time, and total_tokens is left out when it is prompt + completion.
    """
    get = record.get
    rejected = get("x")
    created, ended = get("c", ""), get("d", "")
    if created and ended:
        ended = str(int(ended) - int(created))
    prompt, completion, total = get("up", ""), get("uc", ""), get("ut", "")
    if prompt and completion and total and int(total) == int(prompt) + int(completion):
        total = ""
    return "|".join(
        (
            get("v", ""),
            _STATUS.get(get("s", ""), ""),
            ",".join(_STATUS[r] for r in rejected.split(",")) if rejected else "",
            created,
            _TYPE.get(get("y", ""), ""),
            ended,
            prompt,
            completion,
            total,
            _ERROR.get(get("e", ""), ""),
        )
    )


def decode_state(raw: str) -> dict[str, str]:
    """The fields of a stored state string (empty ones left out)."""
    values = raw.split("|", len(STATE_FIELDS) - 1)
    record = {
        name: _map(name, value, _NAMES)
        for name, value in zip(STATE_FIELDS, values, strict=False)
        if value
    }
    if "c" in record and "d" in record:
        record["d"] = str(int(record["c"]) + int(record["d"]))
    if "up" in record and "uc" in record and "ut" not in record:
        record["ut"] = str(int(record["up"]) + int(record["uc"]))
    return record


# Tracked and Commit are built per entry on the hot path: plain slotted dataclasses, as a
# frozen one's __init__ sets every field through object.__setattr__. Never mutated.
@dataclass(slots=True)
class Tracked:
    """A step's stored state: what the lifecycle decides on, and the whole record."""

    status: StepStatus | None
    version: str
    rejected: frozenset[StepStatus]
    record: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> Tracked:
        """The Tracked of a stored state string."""
        record = decode_state(raw)
        rejected = record.get("x", "")
        return cls(
            status=StepStatus(record["s"]),
            version=record["v"],
            rejected=frozenset(StepStatus(r) for r in rejected.split(",") if r),
            record=record,
        )


UNKNOWN = Tracked(status=None, version="", rejected=frozenset())


@dataclass(slots=True)
class Commit:
    """All the effects of one source entry, applied by one script call."""

    source_id: bytes
    step_id: str
    run_id: str
    expected: str  # the version its state must still have ('' = step unknown)
    state: str = ""  # the step's whole new state string ('' = unchanged)
    run_owner: tuple[str, str] = ("", "")  # (thread, assistant) on a step's first sighting
    events: tuple[bytes, ...] = ()  # derived events, JSON
    usage: tuple[int, int, int] | None = None
    run_usage: bytes = b""  # the run.usage event's JSON, its totals and closing brace left off
    stall: str = ""  # '' | '+<deadline>' (into the stall index) | '-' (out of it)
    live: int = 0  # change in the run's steps in progress: -1, 0 or 1
    ttl_s: int | None = None
    types: tuple[str, ...] = ()  # derived event types, for counting once committed


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A source entry that goes to the DLQ, with the reason."""

    source_id: bytes
    fields: dict[bytes, bytes]
    error: str


StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
"""Entries of one stream as redis-py returns them: (entry id, fields)."""


async def read_streams(
    redis: Redis, cursors: dict[str, str], block_ms: int
) -> list[tuple[str, StreamEntries]]:
    """XREAD after each cursor (a plain reader of derived/DLQ streams, as any consumer)."""
    reply = await redis.xread(cast("Any", cursors), block=block_ms)
    return [(name.decode(), entries) for name, entries in cast("Any", reply or [])]


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class Store:
    """Redis access for one partition: its streams, its group, its state keys.

    Scripts run by EVALSHA without redis-py's per-pipeline SCRIPT EXISTS round trip; they
    are loaded at start-up and again whenever a server answers NOSCRIPT (after a restart or
    a failover the script cache is empty).
    """

    def __init__(self, redis: Redis, settings: Settings, part: Partition | None = None) -> None:
        self.redis = redis
        if not isinstance(redis, RedisCluster):
            fast_packing(redis.connection_pool)
        self.settings = settings
        self.part = part if part is not None else partitions(settings)[0]
        self.keys = self.part.keys
        self._nodes: dict[str, Redis] = {}

    def pipeline(self, transaction: bool = False) -> Any:
        """A pipeline to the server that owns this partition.

        redis-py refuses EVALSHA in cluster pipelines, but every key of a partition shares
        one slot: so on a cluster, pipeline straight to the node that owns that slot.
        """
        if not isinstance(self.redis, RedisCluster):
            return self.redis.pipeline(transaction=transaction)
        node = self.redis.get_node_from_key(self.part.source_stream)
        client = self._nodes.get(node.name)
        if client is None:
            base = ConnectionPool.from_url(self.settings.redis_url)
            kwargs = {**base.connection_kwargs, "host": node.host, "port": node.port, "db": 0}
            pool = fast_packing(ConnectionPool(connection_class=base.connection_class, **kwargs))
            client = self._nodes[node.name] = Redis(connection_pool=pool)
        return client.pipeline(transaction=transaction)

    async def _execute(self, build: Callable[[Any], None], transaction: bool = False) -> list[Any]:
        """Build and run a pipeline; reload scripts after NOSCRIPT, re-route after MOVED.

        Re-running is safe: every script is idempotent per source entry.
        """
        for attempt in range(3):
            pipe = self.pipeline(transaction)
            build(pipe)
            try:
                return cast("list[Any]", await pipe.execute())
            except NoScriptError:
                await self.load_scripts()
            except ResponseError as exc:
                if attempt == 2 or not str(exc).startswith(("MOVED", "ASK", "CLUSTERDOWN")):
                    raise
                assert isinstance(self.redis, RedisCluster)
                await self.redis.initialize()  # the slot map changed (failover, resharding)
                await self.aclose()
        raise RuntimeError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the per-node clients (cluster only)."""
        nodes, self._nodes = self._nodes, {}
        for client in nodes.values():
            # Built on a pool of their own, which aclose() alone leaves connected.
            await client.aclose(close_connection_pool=True)

    async def load_scripts(self) -> None:
        """Load every script (on a cluster, redis-py sends SCRIPT LOAD to every primary)."""
        for script in (COMMIT, DEADLETTER, STALL):
            await self.redis.script_load(script.source)

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; from the beginning."""
        try:
            await self.redis.xgroup_create(
                self.part.source_stream, self.settings.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def check_access(self) -> None:
        """One round trip that fails fast on a wrong password or missing permission."""
        await self.redis.ping()
        await self.redis.xinfo_stream(self.part.source_stream)

    async def read(self, refs: list[StepRef]) -> dict[StepRef, Tracked]:
        """The tracked state of each step: one HMGET per run, in one round trip."""
        by_run: dict[str, list[str]] = {}
        for run_id, step_id in refs:
            by_run.setdefault(run_id, []).append(step_id)
        if not by_run:
            return {}
        run_key = self.keys.run

        def build(pipe: Any) -> None:
            for run_id, step_ids in by_run.items():
                pipe.hmget(run_key(run_id), [STEP_FIELD + step_id for step_id in step_ids])

        states: dict[StepRef, Tracked] = {}
        for (run_id, step_ids), rows in zip(
            by_run.items(), await self._execute(build), strict=True
        ):
            for step_id, raw in zip(step_ids, rows, strict=True):
                states[run_id, step_id] = UNKNOWN if raw is None else Tracked.parse(raw.decode())
        return states

    def _build(
        self, pipe: Any, commits: list[Commit], acks: list[bytes], dead: list[DeadLetter]
    ) -> None:
        s, p = self.settings, self.part
        if commits:
            keys = [p.derived_stream, p.source_stream, self.keys.stalls]
            args: list[Any] = [s.group, s.derived_maxlen]
            run_key = self.keys.run
            for c in commits:
                keys.append(run_key(c.run_id))
                usage = "" if c.usage is None else "%d,%d,%d" % c.usage  # noqa: UP031  # fastest
                ttl = "" if c.ttl_s is None else c.ttl_s
                # Fields that never hold '|' travel as one header (see commit.lua).
                header = (
                    f"{c.source_id.decode()}|{c.expected}|{c.stall}|{ttl}|{c.live}|{usage}|"
                    f"{len(c.events)}"
                )
                args += (
                    header,
                    c.step_id,
                    c.state,
                    stall_member(c.run_id, c.step_id) if c.stall else "",
                    *c.run_owner,
                    c.run_usage,
                    *c.events,
                )
            pipe.evalsha(COMMIT.sha, len(keys), *keys, *args)
        for d in dead:
            dargs: list[Any] = [
                s.group,
                d.source_id,
                s.dlq_maxlen,
                "data",
                d.fields.get(b"data", b""),
            ]
            dargs += ["error", d.error, "source_id", d.source_id, "source_stream", p.source_stream]
            for raw_name, raw_value in d.fields.items():
                if raw_name != b"data":  # kept beside: an entry without `data` loses nothing
                    dargs += [b"field:" + raw_name, raw_value]
            pipe.evalsha(DEADLETTER.sha, 2, p.source_stream, p.dlq_stream, *dargs)
        if acks:
            pipe.xack(p.source_stream, s.group, *acks)

    async def apply(
        self, commits: list[Commit], acks: list[bytes], dead: list[DeadLetter]
    ) -> list[CommitResult]:
        """Run the batch's commits, dead-letters and plain acks in one round trip.

        Returns one result per commit, in order. Plain acks are for entries whose no-op
        decision rests on committed state only, so acking them needs no script. Re-running
        after NOSCRIPT is safe: every script is idempotent per source entry.
        """
        results = await self._execute(lambda pipe: self._build(pipe, commits, acks, dead))
        return [CommitResult(int(r)) for r in results[0]] if commits else []

    # -- recovery: pending entries of dead, stuck or restarted consumers -------------------

    async def own_pending(self, consumer: str, after: bytes, count: int) -> StreamEntries:
        """`consumer`'s own pending entries after id `after` (XREADGROUP with an explicit id)."""
        s = self.settings
        reply = cast(
            "Any",
            await self.redis.xreadgroup(
                s.group, consumer, {self.part.source_stream: after}, count=count
            ),
        )
        return cast("StreamEntries", reply[0][1] if reply else [])

    async def autoclaim(
        self, consumer: str, start: bytes, count: int
    ) -> tuple[bytes, StreamEntries, list[bytes]]:
        """XAUTOCLAIM entries idle longer than the claim time: (next cursor, entries, deleted).

        `deleted` are ids trimmed from the stream while pending: their payload is gone.
        """
        s = self.settings
        reply: list[Any] = await self.redis.xautoclaim(
            self.part.source_stream, s.group, consumer, s.claim_idle_ms, start, count=count
        )
        deleted = list(reply[2]) if len(reply) > 2 else []
        # Entries deleted while pending come back as (id, None) on some servers.
        entries = [(i, f) for i, f in reply[1] if f is not None]
        return reply[0], entries, deleted

    async def deliveries(self, consumer: str, ids: list[bytes]) -> dict[bytes, int]:
        """How many times each of `consumer`'s pending entries has been delivered."""
        if not ids:
            return {}
        rows = cast(
            "list[dict[str, Any]]",
            await self.redis.xpending_range(
                self.part.source_stream,
                self.settings.group,
                min=min(ids, key=_id_key),
                max=max(ids, key=_id_key),
                count=len(ids) * 2,
                consumername=consumer,
            ),
        )
        wanted = set(ids)
        return {
            r["message_id"]: int(r["times_delivered"]) for r in rows if r["message_id"] in wanted
        }

    async def ack_deleted(self, ids: list[bytes]) -> None:
        """Ack pending ids whose entries were trimmed away (nothing left to process)."""
        if ids:
            await self.redis.xack(self.part.source_stream, self.settings.group, *ids)

    async def record_failures(self, failures: dict[bytes, str]) -> None:
        """Remember why entries failed, for the DLQ entry once their deliveries run out."""
        if failures:
            await self.redis.hset(self.keys.failures, mapping=cast("Any", failures))
            await self.redis.expire(self.keys.failures, self.settings.state_ttl_s)

    async def last_failures(self, ids: list[bytes]) -> dict[bytes, str]:
        """The last recorded failure of each id that has one."""
        if not ids:
            return {}
        rows = cast("list[bytes | None]", await self.redis.hmget(self.keys.failures, ids))
        return {i: r.decode() for i, r in zip(ids, rows, strict=True) if r is not None}

    async def forget_failures(self, ids: list[bytes]) -> None:
        """Drop failure records of entries that are done (processed or dead-lettered)."""
        if ids:
            await self.redis.hdel(self.keys.failures, *ids)

    async def hand_back(self, consumer: str) -> int:
        """Make `consumer`'s pending entries claimable at once (graceful shutdown).

        Redis has no "un-claim": re-claiming them to ourselves with a large IDLE makes every
        other consumer's XAUTOCLAIM take them on its next pass instead of after the idle time.
        """
        s = self.settings
        rows = cast(
            "list[dict[str, Any]]",
            await self.redis.xpending_range(
                self.part.source_stream,
                s.group,
                min="-",
                max="+",
                count=10_000,
                consumername=consumer,
            ),
        )
        ids = [r["message_id"] for r in rows]
        if ids:
            await self.redis.xclaim(
                self.part.source_stream,
                s.group,
                consumer,
                0,
                ids,
                idle=s.claim_idle_ms * 10,
                justid=True,
            )
        return len(ids)

    # -- dead-letter replay --------------------------------------------------------------------

    async def replay_dlq(self, kind: str | None = None, limit: int | None = None) -> int:
        """Re-submit dead-lettered entries to the source stream, oldest first.

        Each entry is XADDed back (original `data` and fields, plus `replayed_from`) and
        XDELed from the DLQ in one MULTI/EXEC, so it is removed only once re-submitted.
        """
        replayed, cursor = 0, "-"
        while limit is None or replayed < limit:
            page = cast(
                "StreamEntries",
                await self.redis.xrange(self.part.dlq_stream, cursor, "+", count=200),
            )
            if not page:
                return replayed
            cursor = "(" + page[-1][0].decode()
            pipe = self.pipeline(transaction=True)
            for dlq_id, fields in page:
                error = json.loads(fields.get(b"error", b"{}") or b"{}")
                if kind is not None and error.get("kind") != kind:
                    continue
                if limit is not None and replayed >= limit:
                    break
                entry: dict[bytes, bytes] = {
                    k.removeprefix(b"field:"): v
                    for k, v in fields.items()
                    if k.startswith(b"field:")
                }
                if error.get("kind") != "missing_data":
                    entry[b"data"] = fields.get(b"data", b"")
                entry[b"replayed_from"] = dlq_id
                pipe.xadd(self.part.source_stream, cast("Any", entry))
                pipe.xdel(self.part.dlq_stream, dlq_id)
                replayed += 1
            await pipe.execute()
        return replayed

    # -- stalled steps -----------------------------------------------------------------------

    async def due_stalls(self, now: int, limit: int) -> list[StepRef]:
        """(run id, step id) of the steps whose stall deadline has passed.

        A member that does not name a run (written by an earlier build) is dropped, so it
        can never stop the scan.
        """
        members = cast(
            "list[bytes]",
            await self.redis.zrangebyscore(self.keys.stalls, "-inf", now, start=0, num=limit),
        )
        refs, unreadable = [], []
        for member in members:
            ref = _stall_ref(member.decode(errors="replace"))
            if ref is None:
                unreadable.append(member)
            else:
                refs.append(ref)
        if unreadable:
            log.warning("dropping %d unreadable stall index members", len(unreadable))
            await self.redis.zrem(self.keys.stalls, *unreadable)
        return refs

    async def publish_stall(self, run_id: str, step_id: str, event: bytes) -> bool:
        """Publish `event` if this call takes the step off the stall index (once overall)."""
        s = self.settings
        keys = [self.keys.stalls, self.keys.run(run_id), self.part.derived_stream]
        args: list[Any] = [stall_member(run_id, step_id), step_id, s.derived_maxlen, event]
        [published] = await self._execute(lambda pipe: pipe.evalsha(STALL.sha, 3, *keys, *args))
        return bool(published)

    async def step(self, run_id: str, step_id: str) -> dict[str, str] | None:
        """A step's tracked state with readable field names, or None if unknown."""
        raw = cast(
            "list[bytes | None]",
            await self.redis.hmget(self.keys.run(run_id), STEP_FIELD + step_id, "t", "a"),
        )
        state, thread, assistant = (None if r is None else r.decode() for r in raw)
        return None if state is None else _readable(run_id, step_id, state, thread, assistant)

    async def run(self, run_id: str) -> dict[str, Any] | None:
        """A run's usage totals and its steps' states, or None if unknown."""
        raw = cast("dict[bytes, bytes]", await self.redis.hgetall(self.keys.run(run_id)))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        thread, assistant = fields.get("t"), fields.get("a")
        return {
            "run_id": run_id,
            "thread_id": thread,
            "assistant_id": assistant,
            "usage": {k: int(fields.get(k, 0)) for k in USAGE_FIELDS},
            "steps_in_progress": int(fields.get("n", 0)),
            "steps": [
                _readable(run_id, name.removeprefix(STEP_FIELD), value, thread, assistant)
                for name, value in sorted(fields.items())
                if name.startswith(STEP_FIELD)
            ],
        }


def _readable(
    run_id: str, step_id: str, raw: str, thread: str | None, assistant: str | None
) -> dict[str, str]:
    state = {FIELD_NAMES[k]: v for k, v in decode_state(raw).items()}
    state |= {"step_id": step_id, "run_id": run_id}
    # Thread and assistant are kept once per run, not per step.
    for name, value in (("thread_id", thread), ("assistant_id", assistant)):
        if value is not None:
            state[name] = value
    return state


async def find_step(stores: list[Store], run_id: str, step_id: str) -> dict[str, str] | None:
    """A step's tracked state, from the partition its run id maps to."""
    if not stores:
        return None
    return await stores[partition_for(run_id, len(stores))].step(run_id, step_id)


async def find_run(stores: list[Store], run_id: str) -> dict[str, Any] | None:
    """A run's usage totals and steps, from the partition its run id maps to."""
    if not stores:
        return None
    return await stores[partition_for(run_id, len(stores))].run(run_id)
