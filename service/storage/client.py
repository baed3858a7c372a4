"""Redis connections: the client, hiredis packing, and one partition's pipelines.

On a cluster every key of a partition shares one slot (keys.py), so a partition's commands
go straight to the node that owns it, in one pipeline, with no cross-slot routing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

from service.storage.keys import Keys, Partition, partitions
from service.storage.replies import keep_duplicate_fields
from service.storage.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Callable

    from service.settings import Settings

__all__ = ["PartitionClient", "connect", "fast_packing"]


def connect(settings: Settings) -> Redis:
    """The redis-py client for `settings`: a cluster client when RUNSTEPS_CLUSTER is set;
    its stream reads keep repeated field names (service/storage/replies.py)."""
    if settings.cluster:
        # RedisCluster speaks the same commands; typed as Redis so the modules have one type.
        cluster = RedisCluster.from_url(settings.redis_url, socket_connect_timeout=5)
        return keep_duplicate_fields(cast("Redis", cluster))
    return keep_duplicate_fields(Redis.from_url(settings.redis_url, socket_connect_timeout=5))


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's Python packer.

    redis-py's asyncio connection packs in Python, re-joining its buffer once per argument,
    and a batch's commit call has thousands of arguments (bench/README.md).
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


class PartitionClient:
    """Redis access for one partition: its streams, its group, its key names.

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
        self._nodes: dict[str, Redis] = {}

    @property
    def keys(self) -> Keys:
        """The partition's state key names."""
        return self.part.keys

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

    async def execute(self, build: Callable[[Any], None], transaction: bool = False) -> list[Any]:
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
        for script in SCRIPTS:
            await self.redis.script_load(script.source)

    async def ensure_group(self) -> bool:
        """Create the consumer group (and the stream) if missing, from the beginning; True
        if this call created it.

        At maxmemory with `noeviction` Redis refuses XGROUP CREATE even for a group that
        exists (OutOfMemoryError, an infrastructure error): callers retry until memory is
        freed, as FastStream's subscriber issues the same command when it starts.
        """
        try:
            await self.redis.xgroup_create(
                self.part.source_stream, self.settings.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def check_access(self) -> None:
        """Round trips that fail fast on a wrong password or missing permission."""
        await self.redis.ping()
        await self.redis.xinfo_stream(self.part.source_stream)
        await self.redis.info("memory")  # the recovery loop watches memory use (trim.py)
