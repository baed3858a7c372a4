"""A private `redis-server` on a free loopback port, for the demo, tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from service.errors import RedisServerNotFoundError

__all__ = ["LocalCluster", "LocalRedis", "find_redis_server"]

_CANDIDATES = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")


def find_redis_server() -> str:
    """Path of a redis-server binary, or a RedisServerNotFoundError saying how to get one."""
    found = shutil.which("redis-server") or next((c for c in _CANDIDATES if Path(c).exists()), None)
    if found is None:
        raise RedisServerNotFoundError(
            "no redis-server binary found on PATH. Install one "
            "(Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`) "
            "or point RUNSTEPS_REDIS_URL at a running Redis."
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port p below 55536 whose cluster bus port p + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            # -NOAUTH: up, but the default user is off (an ACL file); it still answers.
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class LocalRedis:
    """One redis-server process bound to 127.0.0.1 only, with its own data directory."""

    def __init__(
        self,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        data_dir: Path | None = None,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """`wrapper`: a command to run the server under (bench.instructions: valgrind)."""
        self.port = port or free_port()
        self.args = args
        self.wrapper = wrapper
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="runsteps-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING."""
        cmd = [
            *self.wrapper,
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while not _ping(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)  # polling a socket with a deadline, not waiting on a guess
        return self

    def kill(self) -> None:
        """SIGKILL the server (crash simulation); the data directory stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after `timeout_s`) and remove its private data
        directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalCluster:
    """A Redis Cluster of `masters` redis-server processes on loopback (no replicas).

    Each node keeps its own data directory (nodes.conf and AOF), so a killed node can be
    started again on its port and rejoin with its slots.
    """

    def __init__(
        self,
        masters: int = 3,
        base_dir: Path | None = None,
        *,
        args: tuple[str, ...] = (),
        admin: tuple[str, str] | None = None,
    ) -> None:
        """`args` go to every node (an `--aclfile`, say); `admin` is the (user, password)
        redis-cli authenticates as to create and watch the cluster, when `default` is off."""
        self._extra = args
        self._cli_auth: tuple[str, ...] = ()
        if admin is not None:
            self._cli_auth = ("--user", admin[0], "--pass", admin[1], "--no-auth-warning")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="runsteps-cluster-")
            base_dir = Path(self._tmp.name)
        self.nodes: list[LocalRedis] = []
        for i in range(masters):
            node_dir = base_dir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                LocalRedis(port=_free_cluster_port(), data_dir=node_dir, args=self._args())
            )

    def _args(self) -> tuple[str, ...]:
        return (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
            # Keep serving the slots of live masters while one is down (no replicas here).
            "--cluster-require-full-coverage", "no",
            "--appendonly", "yes",
            "--appendfsync", "always",
            *self._extra,
        )  # fmt: skip

    def _cli(self) -> list[str]:
        return [shutil.which("redis-cli") or "redis-cli", *self._cli_auth]

    @property
    def url(self) -> str:
        """A redis:// URL of one node; cluster clients discover the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        """Start every node, create the cluster, wait until it serves every slot."""
        for node in self.nodes:
            node.start()
        cli = self._cli()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        if len(self.nodes) == 1:  # redis-cli --cluster create wants 3 masters: do it by hand
            port = str(self.nodes[0].port)
            subprocess.run(
                [*cli, "-p", port, "cluster", "addslotsrange", "0", "16383"],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )
        else:
            subprocess.run(
                [
                    *cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )
        self.wait_ok(timeout_s)
        return self

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Wait until every node reports cluster_state:ok."""
        deadline = time.monotonic() + timeout_s
        cli = self._cli()
        for node in self.nodes:
            while True:
                out = subprocess.run(
                    [*cli, "-p", str(node.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                if "cluster_state:ok" in out:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster not ok on port {node.port}: {out[:200]}")
                time.sleep(0.05)  # polling the cluster state with a deadline

    def restart(self, index: int) -> None:
        """Start node `index` again on its port, from its own data directory."""
        old = self.nodes[index]
        self.nodes[index] = LocalRedis(port=old.port, data_dir=old.data_dir, args=self._args())
        self.nodes[index].start()

    def stop(self) -> None:
        """Stop every node and remove the data directories."""
        for node in self.nodes:
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
