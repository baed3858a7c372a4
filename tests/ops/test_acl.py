"""deploy/redis/users.acl on a real redis-server: the worker runs as `runsteps`, nothing more.

The server loads the repository's ACL file as it is (the placeholder passwords are the
documented `change-me*` ones), the worker runs in this process as user `runsteps`, and the
ACL log must stay empty: a command the worker needs and the file forgets shows up there even
when a client swallows the NOPERM reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from contracts.partitioning import partition_for
from service.dev.redis_server import LocalCluster, LocalRedis, find_redis_server
from service.dev.sample import SAMPLE_EXPECTED, T0, sample_entries, step
from service.settings import Settings
from service.storage.keys import partitions
from service.worker.app import build_worker
from tests.helpers import drained, outcome_counts, read_json, wait_until
from tests.system.workers import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]
ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
# The placeholders documented in deploy/README.md; the file stores their SHA-256.
PASSWORDS = {
    "runsteps": "change-me",
    "producer": "change-me-producer",
    "keda": "change-me-keda",
    "admin": "change-me-admin",
}
EXIT_TIMEOUT_S = 20.0


def _server_version() -> tuple[int, ...]:
    out = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    assert found is not None, out
    return tuple(int(part) for part in found.groups())


def _acl_file(tmp_path: Path) -> Path:
    """deploy/redis/users.acl as this redis-server version accepts it."""
    text = ACL_FILE.read_text()
    if _server_version() < (7, 2):
        # CLIENT SETINFO arrived in Redis 7.2; older servers refuse a rule that names it.
        text = text.replace(" +client|setinfo", "")
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(text)
    return aclfile.resolve()


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[LocalRedis]:
    """A private redis-server that loads deploy/redis/users.acl (`default` user off)."""
    with LocalRedis(args=("--aclfile", str(_acl_file(tmp_path)))) as server:
        yield server


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _url(server: LocalRedis, user: str, password: str | None = None) -> str:
    secret = PASSWORDS[user] if password is None else password
    return f"redis://{user}:{secret}@127.0.0.1:{server.port}/0"


@pytest.fixture
async def admin(acl_server: LocalRedis) -> AsyncIterator[Redis]:
    """The admin user: checks the worker's effects and reads the ACL log."""
    client = Redis.from_url(_url(acl_server, "admin"))
    yield client
    await client.aclose()


async def test_worker_runs_the_sample_as_the_runsteps_user(
    acl_server: LocalRedis, admin: Redis
) -> None:
    """As `runsteps`, the worker consumes, claims, dead-letters and flags stalls; no denial."""
    settings = Settings(
        redis_url=_url(acl_server, "runsteps"),
        consumer="acl-worker",
        block_ms=50,
        claim_idle_ms=50,
        http_port=0,
    )  # the default stream, group and key names: the ones the ACL file grants
    producer = Redis.from_url(_url(acl_server, "producer"))
    # An entry a dead consumer fetched and never acked: the worker must claim it.
    claimed = step("step_claimed", "completed", run_id="run_claimed", ended_at=T0 + 1, usage=(1, 1))
    await producer.xadd(settings.source_stream, {"data": _json(claimed)})
    await admin.xgroup_create(settings.source_stream, settings.group, id="0")
    await admin.xreadgroup(settings.group, "dead-consumer", {settings.source_stream: ">"}, count=1)

    worker = build_worker(settings)
    await worker.start()
    try:
        for _, data in sample_entries():
            await producer.xadd(settings.source_stream, {"data": data})
        await producer.xadd(
            # In a run that does not end: a step of an ended run ends with it, never stalls.
            settings.source_stream,
            {"data": _json(step("step_stuck", "in_progress", run_id="run_stuck"))},
        )
        await wait_until(
            lambda: drained(admin, settings.source_stream, settings.group), what="stream drained"
        )
        [recovery] = worker.recoveries
        await recovery.claim_once()
        assert await recovery.scan_stalls(now=int(time.time()) + 10 * 86_400) == 1
        assert await worker.readiness() == {"redis": True, "consuming": True, "recovery_loop": True}
    finally:
        await worker.stop()
        await producer.aclose()

    counts = await outcome_counts(admin, settings.derived_stream, settings.dlq_stream)
    extra = {"run_step.completed": 1, "run.usage": 1, "run_step.started": 2, "run_step.stalled": 1}
    assert counts == Counter(SAMPLE_EXPECTED) + Counter(extra)
    assert await admin.xpending(settings.source_stream, settings.group) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    denials = cast("list[dict[str, Any]]", await admin.acl_log())
    assert denials == [], f"the ACL denied the worker: {denials}"


def _runs_by_partition(count: int, prefix: str = "run_") -> list[str]:
    """One run id per partition: run_0, run_1, ... as partition_for spreads them."""
    runs: dict[int, str] = {}
    for i in range(1000):
        runs.setdefault(partition_for(f"{prefix}{i}", count), f"{prefix}{i}")
        if len(runs) == count:
            return [runs[p] for p in range(count)]
    raise AssertionError("no run id for some partition")


@pytest.fixture
async def acl_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A 3-master cluster whose every node loads deploy/redis/users.acl."""
    cluster = LocalCluster(
        masters=3,
        base_dir=tmp_path / "cluster",
        args=("--aclfile", str(_acl_file(tmp_path))),
        admin=("admin", PASSWORDS["admin"]),
    )
    try:
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


@pytest.mark.system
@pytest.mark.timeout(120)
async def test_worker_runs_as_runsteps_on_a_cluster(acl_cluster: LocalCluster) -> None:
    """The same ACL file on every master of a 3-master cluster: a worker process, as
    `runsteps`, runs the sample on 3 partitions (a run on each master) with a cluster client,
    whose own commands (slot map, key positions) the file grants too, flags a stalled step
    on each, and stops cleanly; no node logs a denial."""
    port = acl_cluster.nodes[0].port
    settings = Settings(
        redis_url=_cluster_url(port, "runsteps"),
        cluster=True,
        partitions=3,
        block_ms=50,
        claim_idle_ms=50,
        stall_after_s=1,
        stall_scan_s=0.2,
        http_port=0,
    )  # the default stream, group and key names: the ones the ACL file grants
    parts = partitions(settings)
    admin = cast("Redis", RedisCluster.from_url(_cluster_url(port, "admin")))
    producer = cast("Redis", RedisCluster.from_url(_cluster_url(port, "producer")))
    try:
        worker = start_worker(settings, "acl-cluster")
        try:
            # Each stuck step in a run that does not end (a step of an ended run ends with it).
            open_runs = _runs_by_partition(len(parts), "open_")
            for part, run_id, open_run in zip(
                parts, _runs_by_partition(len(parts)), open_runs, strict=True
            ):
                stuck = _json(step("step_stuck", "in_progress", run_id=open_run))
                for data in [*(data for _, data in sample_entries(run_id)), stuck]:
                    await producer.xadd(part.source_stream, {"data": data})

            async def all_flagged() -> bool:
                assert worker.poll() is None, "the worker exited"
                for part in parts:
                    if not await drained(admin, part.source_stream, settings.group):
                        return False
                    events = await read_json(admin, part.derived_stream)
                    if not any(e["type"] == "run_step.stalled" for e in events):
                        return False
                return True

            await wait_until(all_flagged, 30, "every partition drained, its stuck step stalled")
        finally:
            stderr = stop_worker(worker)
        assert worker.returncode == 0, stderr
        extra = {"run_step.started": 1, "run_step.stalled": 1}
        for part in parts:
            counts = await outcome_counts(admin, part.derived_stream, part.dlq_stream)
            assert counts == Counter(SAMPLE_EXPECTED) + Counter(extra), part.source_stream
        for node in acl_cluster.nodes:
            one = Redis(port=node.port, username="admin", password=PASSWORDS["admin"])
            denials = cast("list[dict[str, Any]]", await one.acl_log())
            await one.aclose()
            assert denials == [], f"node {node.port} denied: {denials}"
    finally:
        await admin.aclose()
        await producer.aclose()


def _cluster_url(port: int, user: str) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{port}/0"


async def test_runsteps_user_is_denied_everything_else(acl_server: LocalRedis) -> None:
    """`runsteps` cannot flush, configure, list keys, or touch keys outside `runsteps*`."""
    client = Redis.from_url(_url(acl_server, "runsteps"))
    try:
        with pytest.raises(NoPermissionError):
            await client.flushall()
        with pytest.raises(NoPermissionError):
            await client.config_get("*")
        with pytest.raises(NoPermissionError):
            await client.keys("*")
        with pytest.raises(NoPermissionError):
            await client.hset("billing:account:1", "k", "v")
        with pytest.raises(NoPermissionError):
            await client.xadd("other.events", {"data": b"{}"})
        with pytest.raises(NoPermissionError):
            await client.publish("runsteps.events", b"x")
        # Scripts run as the caller: a script cannot reach a key the user cannot.
        sha = await client.script_load("return redis.call('GET', KEYS[1])")
        with pytest.raises(NoPermissionError):
            await client.evalsha(sha, 1, "billing:account:1")
        sneaky = await client.script_load(
            "return redis.call('HSET', 'billing:account:1', 'k', 'v')"
        )
        with pytest.raises(ResponseError, match="can't access"):
            await client.evalsha(sneaky, 0)
    finally:
        await client.aclose()


async def test_other_users_get_only_their_own_commands(acl_server: LocalRedis) -> None:
    """`default` is off; `producer` may only XADD events; `keda` may only read the lag."""
    anonymous = Redis.from_url(f"redis://127.0.0.1:{acl_server.port}/0")
    producer = Redis.from_url(_url(acl_server, "producer"))
    keda = Redis.from_url(_url(acl_server, "keda"))
    try:
        with pytest.raises(AuthenticationError):
            await anonymous.ping()
        await producer.xadd("runsteps.events", {"data": b"{}"})
        with pytest.raises(NoPermissionError):
            await producer.xrange("runsteps.events")
        with pytest.raises(NoPermissionError):
            await producer.xadd("runsteps.derived", {"data": b"{}"})
        with pytest.raises(NoPermissionError):
            await keda.xgroup_create("runsteps.events", "runsteps", id="0")
        assert await keda.xlen("runsteps.events") == 1
        assert await keda.xinfo_groups("runsteps.events") == []
        with pytest.raises(NoPermissionError):
            await keda.xadd("runsteps.events", {"data": b"{}"})
    finally:
        for client in (anonymous, producer, keda):
            await client.aclose()


def _run_worker_cli(redis_url: str, tmp_path: Path) -> tuple[int | None, str]:
    """Run `python -m service worker`; (exit code or None if still running at the deadline,
    stderr). A worker still running is SIGKILLed (it ignores SIGTERM during start-up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTEPS_")}
    env |= {"RUNSTEPS_REDIS_URL": redis_url, "RUNSTEPS_HTTP_PORT": "0"}
    err_path = tmp_path / "stderr.txt"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            code: int | None = proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
            proc.kill()
            proc.wait(timeout=10)
    return code, err_path.read_text(errors="replace")


def test_wrong_password_stops_the_worker_with_a_configuration_error(
    acl_server: LocalRedis, tmp_path: Path
) -> None:
    """A wrong password is a configuration error: exit code 2 and a clear message, at once."""
    code, stderr = _run_worker_cli(_url(acl_server, "runsteps", "wrong-password"), tmp_path)
    assert code is not None, (
        f"the worker was still running {EXIT_TIMEOUT_S}s after Redis refused its password; "
        f"it logged:\n{stderr[-1500:]}"
    )
    assert code == 2, stderr[-1500:]
    assert "configuration error" in stderr


def test_missing_permission_stops_the_worker_with_a_configuration_error(
    acl_server: LocalRedis, tmp_path: Path
) -> None:
    """A user lacking a command the worker needs is a configuration error: exit code 2."""
    code, stderr = _run_worker_cli(_url(acl_server, "keda"), tmp_path)
    assert code is not None, f"still running after {EXIT_TIMEOUT_S}s:\n{stderr[-1500:]}"
    assert code == 2, f"exit code {code}; stderr:\n{stderr[-1500:]}"
    assert "configuration error" in stderr
