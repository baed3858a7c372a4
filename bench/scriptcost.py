"""`python -m bench.scriptcost`: where the commit script's redis-server CPU goes.

The workload is decoded into batches of 500 as the worker does, and every batch's commit
call (keys and arguments, exactly as the worker sends them) is recorded once. The calls are
then replayed against three scripts in turns, each on a flushed server, and redis-server's
CPU per entry is measured (median of the rounds):

- `commit`: service/storage/lua/commit.lua as the worker runs it;
- `arguments only`: the same calls to a script that returns at once: what carrying the
  arguments into Lua costs (Redis's Lua hashes every byte of every string it creates);
- `no XADD`: the commit script with its XADD left out (everything else as is).

So `commit` less `no XADD` is the derived events' XADDs (the contract: one per event), and
`no XADD` less `arguments only` is deciding and writing state. XREADGROUP is not in here: the
bench's B pays it too.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import uvloop

from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.pending import Pending
from service.storage.protocol import commit_call
from service.storage.scripts import COMMIT
from service.storage.store import Store
from service.worker.process import Processor
from service.worker.telemetry import Telemetry

from .infra import cpu_seconds, fresh_redis
from .workload import build

BATCH = 500
_XADD = "redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', data)"


def scripts() -> dict[str, str]:
    """The commit script and its two cut-down variants, by name."""
    source = COMMIT.source
    assert _XADD in source, "commit.lua's publish() changed: update bench/scriptcost.py"
    return {
        "commit": source,
        "arguments only": "do return '' end\n" + source,
        "no XADD": source.replace(_XADD, ""),
    }


async def run(events: int, rounds: int) -> None:
    workload = build(events)
    async with fresh_redis() as (server, redis):
        assert server.proc is not None
        settings = Settings(redis_url=server.url, consumer="scriptcost")
        store = Store(PartitionClient(redis, settings))
        processor = Processor(store, Pending(store.conn), settings, Telemetry())
        entries = [
            (f"{1_700_000_000_000 + i}-0".encode(), {b"data": p})
            for i, p in enumerate(workload.payloads)
        ]
        calls: list[tuple[int, tuple[Any, ...]]] = []
        for at in range(0, len(entries), BATCH):  # the worker's decoding and exact call
            batch = processor.build(entries[at : at + BATCH])
            call = commit_call(store.conn, batch.runs, batch.acks)
            calls.append((len(call.keys), (*call.keys, *call.args)))
        sent = sum(len(a) for _, args in calls for a in args if isinstance(a, bytes | str))
        print(f"{events:,} entries in {len(calls)} calls, {sent / events:.0f} bytes each")
        per_entry: dict[str, list[float]] = {name: [] for name in scripts()}
        for _ in range(rounds):
            for name, source in scripts().items():
                await redis.flushall()
                sha = await redis.script_load(source)
                await redis.xgroup_create(settings.source_stream, settings.group, mkstream=True)
                before = cpu_seconds(server.proc.pid)
                for nkeys, args in calls:
                    await redis.evalsha(sha, nkeys, *args)
                per_entry[name].append((cpu_seconds(server.proc.pid) - before) / events * 1e6)
        for name, values in per_entry.items():
            print(f"{name:>15}: {statistics.median(values):4.1f} us of redis-server CPU per entry")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scriptcost", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    uvloop.run(run(args.events, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
