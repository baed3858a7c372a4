"""deploy/kubernetes run in a real pod with `podman kube play`: ConfigMap, Deployment, Secret.

What podman (4.3, Debian bookworm) cannot do as a cluster would, and how this test bridges it
(each bridge is the smallest that lets the manifests run; the manifests are otherwise as
committed):
- A Secret in the played YAML is stored in a form podman's own secretKeyRef reader rejects
  ("not valid JSON"): the test creates the podman secret itself (JSON, base64 values).
- podman publishes every containerPort on the host, so two replicas collide on 8080 (and the
  host's 8080 may be taken): the test plays one replica without `ports`, and resolves the
  probes' named port from the committed manifest itself.
- startupProbe and readinessProbe are ignored; livenessProbe becomes a healthcheck
  `curl -f http://localhost:0/healthz` (curl is not in the image; a named port becomes 0), and
  nothing runs it without systemd: the test runs each probe's HTTP GET inside the pod instead.
Redis runs beside it as a pod named `redis` on a network of the test's own, so the Secret's
example URL (redis://runsteps:change-me@redis:6379/0) works unchanged.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from service.dev.sample import step
from tests.container.engine import ROOT, Engine, wait_for

pytestmark = pytest.mark.container

K8S = ROOT / "deploy" / "kubernetes"
REDIS_IMAGE = os.environ.get("RUNSTEPS_TEST_REDIS_IMAGE", "redis:7.4.6-bookworm")


def load(name: str) -> dict[str, Any]:
    """One manifest of deploy/kubernetes, parsed."""
    doc: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return doc


def redis_pod(image: str) -> dict[str, Any]:
    """A pod `redis` with the repository's ACL users (7.0-compatible: see test_compose)."""
    acl = (ROOT / "deploy" / "redis" / "users.acl").read_text().replace(" +client|setinfo", "")
    users = [arg for line in acl.splitlines() for arg in ["--user", *line.split()[1:]]]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "redis"},
        "spec": {
            "containers": [
                {
                    "name": "redis",
                    "image": image,
                    "command": ["redis-server", "--protected-mode", "no", *users],
                }
            ]
        },
    }


class Pods:
    """The played pods: run commands in the worker and in Redis."""

    def __init__(self, engine: Engine, worker: str, redis: str) -> None:
        self.engine = engine
        self.worker = worker
        self.redis = redis

    def http_get(self, port: int, path: str, token: str = "") -> int:
        """The HTTP status of GET 127.0.0.1:port/path from inside the worker's pod, bearing
        `token` if given."""
        code = (
            "import sys, urllib.request, urllib.error\n"
            "headers = {'Authorization': 'Bearer ' + sys.argv[2]} if sys.argv[2] else {}\n"
            "request = urllib.request.Request(sys.argv[1], headers=headers)\n"
            "try: print(urllib.request.urlopen(request, timeout=2).status)\n"
            "except urllib.error.HTTPError as e: print(e.code)\n"
            "except OSError: print(0)\n"
        )
        url = f"http://127.0.0.1:{port}{path}"
        run = self.engine.run("exec", self.worker, "python", "-c", code, url, token)
        return int(run.stdout)

    def redis_cli(self, user: str, password: str, *command: str) -> Any:
        """redis-cli in the Redis pod as `user`, the reply as JSON."""
        out = self.engine.run(
            "exec", self.redis, "redis-cli", "--json", "--no-auth-warning",
            "--user", user, "--pass", password, *command,
        ).stdout  # fmt: skip
        return json.loads(out)


def answers_200(pods: Pods, port: int, path: str) -> bool:
    """True when GET port/path inside the worker's pod answers 200."""
    return pods.http_get(port, path) == 200


@pytest.fixture(scope="module")
def pods(engine: Engine, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    """Redis and one worker replica played from the manifests; all removed afterwards."""
    tmp_path = tmp_path_factory.mktemp("kube")
    if engine.name != "podman":
        pytest.fail("kube play needs podman (CI installs it: .ci/ensure-podman)")
    tag = uuid.uuid4().hex[:6]
    network = f"runsteps-kube-{tag}"
    secret = load("secret.example.yaml")
    data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    secret_file = tmp_path / "secret.json"
    secret_file.write_text(json.dumps(data))

    deployment = load("deployment.yaml")
    deployment["spec"]["replicas"] = 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    del container["ports"]
    worker_file = tmp_path / "worker.yaml"
    worker_file.write_text(yaml.safe_dump_all([load("configmap.yaml"), deployment]))
    redis_file = tmp_path / "redis.yaml"
    redis_file.write_text(yaml.safe_dump(redis_pod(REDIS_IMAGE)))

    engine.run("network", "create", network)
    try:
        engine.check_dns(network)  # the worker finds `redis` by name
        engine.run("secret", "create", secret["metadata"]["name"], str(secret_file))
        engine.run("kube", "play", "--network", network, str(redis_file))
        engine.run("kube", "play", "--network", network, str(worker_file))
        pod = f"{deployment['metadata']['name']}-pod-0"
        yield Pods(engine, f"{pod}-{container['name']}", "redis-redis")
    finally:
        engine.run("kube", "down", str(worker_file), check=False)
        engine.run("kube", "down", str(redis_file), check=False)
        engine.run("secret", "rm", secret["metadata"]["name"], check=False)
        engine.run("network", "rm", network, check=False)


def test_deployment_runs_locked_down_and_its_probes_answer(engine: Engine, pods: Pods) -> None:
    """The pod runs as 10001 with a read-only root and no capabilities; its probes get 200."""
    found = engine.inspect("container", "inspect", pods.worker)
    assert found["Config"]["User"] == "10001:10001"
    assert found["HostConfig"]["ReadonlyRootfs"] is True
    assert not found["EffectiveCaps"]
    env = dict(e.split("=", 1) for e in found["Config"]["Env"])
    assert env["RUNSTEPS_CONSUMER"] == "runsteps-pod-0", "the downward API's pod name"
    assert env["RUNSTEPS_REDIS_URL"] == load("secret.example.yaml")["stringData"]["redis-url"]
    assert (
        env["RUNSTEPS_SHUTDOWN_GRACE_S"]
        == load("configmap.yaml")["data"]["RUNSTEPS_SHUTDOWN_GRACE_S"]
    )
    engine.run("exec", pods.worker, "touch", "/tmp/written")  # the emptyDir at /tmp

    container = load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        port: int = named.get(get["port"], get["port"])
        wait_for(functools.partial(answers_200, pods, port, get["path"]), what=f"{probe} 200")


def test_deployment_carries_an_event(pods: Pods) -> None:
    """A producer's XADD into the pod's Redis comes out as run_step.started."""
    step_id = f"step_{uuid.uuid4().hex[:8]}"
    data = json.dumps(step(step_id, "in_progress"))
    pods.redis_cli("producer", "change-me-producer", "XADD", "runsteps.events", "*", "data", data)

    def started() -> bool:
        entries = pods.redis_cli("admin", "change-me-admin", "XRANGE", "runsteps.derived", "-", "+")
        events = [json.loads(fields[1]) for _, fields in entries]
        return any(e["type"] == "run_step.started" and e["step_id"] == step_id for e in events)

    wait_for(started, what=f"run_step.started for {step_id}")


def test_query_api_answers_only_the_bearer_of_the_secrets_token(pods: Pods) -> None:
    """The Secret's optional `http-token` reaches the pod: /runs/... answers 401 without it
    and looks the run up with it (the probes answer without any, test above)."""
    token = load("secret.example.yaml")["stringData"]["http-token"]
    container = load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    wait_for(functools.partial(answers_200, pods, port, "/healthz"), what="/healthz 200")
    assert pods.http_get(port, "/runs/run_unknown") == 401
    assert pods.http_get(port, "/runs/run_unknown", "not-" + token) == 401
    assert pods.http_get(port, "/runs/run_unknown", token) == 404
