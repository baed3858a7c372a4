"""A container engine driven through its CLI (docker or podman: the same verbs), and waiting."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from redis import Redis

ROOT = Path(__file__).resolve().parents[2]


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll `check` until it holds; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def http_status(url: str) -> int | None:
    """The HTTP status of GET url, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stream_json(client: Redis, stream: str) -> list[dict[str, Any]]:
    """Every entry's `data` field of a stream, parsed as JSON."""
    found = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(stream))
    return [json.loads(fields[b"data"]) for _, fields in found]


def has_started(client: Redis, step_id: str, stream: str = "runsteps.derived") -> bool:
    """True once the derived stream holds run_step.started for step_id."""
    return any(
        e["type"] == "run_step.started" and e.get("step_id") == step_id
        for e in stream_json(client, stream)
    )


class Engine:
    """docker or podman, whichever `.ci/engine` found answering."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def find(cls) -> Engine:
        """The engine that answers; AssertionError saying why when there is none."""
        found = subprocess.run(
            ["bash", str(ROOT / ".ci" / "engine")], capture_output=True, text=True, check=False
        )
        if found.returncode != 0:
            raise AssertionError(f"no container engine: {found.stderr.strip()}")
        return cls(found.stdout.strip())

    def run(
        self, *args: str, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`<engine> args...`, output captured; raises with its stderr when check fails."""
        done = subprocess.run(
            [self.name, *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)}: {done.stderr.strip()}")
        return done

    def run_tool(
        self, command: list[str], env: dict[str, str], check: bool = True, timeout_s: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Another program (a compose tool) with its own environment, output captured."""
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {done.stdout}\n{done.stderr}")
        return done

    def check_dns(self, network: str) -> None:
        """Fail at once, saying why, when `network` gives its containers no DNS (podman's CNI
        networks without the dnsname plugin, or made before it): a container looking
        another up by name would otherwise just time out."""
        if self.name != "podman":
            return  # docker's user-defined networks always have DNS
        found = self.run("network", "inspect", "--format", "{{.DNSEnabled}}", network)
        if found.stdout.strip() != "true":
            raise AssertionError(
                f"podman network {network} has no DNS (dns_enabled: {found.stdout.strip()}):"
                " its containers cannot find each other by name; run `bash .ci/ensure-podman`"
                " (installs golang-github-containernetworking-plugin-dnsname and makes networks"
                " that predate it again)"
            )

    def networks(self, label: str) -> list[str]:
        """The names of the networks carrying `label` (key=value)."""
        found = self.run("network", "ls", "--filter", f"label={label}", "--format", "{{.Name}}")
        return found.stdout.split()

    def inspect(self, *args: str) -> dict[str, Any]:
        """`<engine> [image|container] inspect` of one object, parsed."""
        reply: list[dict[str, Any]] = json.loads(self.run(*args).stdout)
        return reply[0]

    def remove(self, container: str) -> None:
        """Remove a container, running or not, if it exists."""
        self.run("rm", "-f", container, check=False)
