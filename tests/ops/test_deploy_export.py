"""deploy/kubernetes/export-otel and the compose service of `runsteps export-otel`, checked
offline against the schemas and against the worker's own manifests and settings."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from service.storage.keys import partitions
from tests.ops.test_deploy import (
    K8S,
    K8S_VERSIONS,
    KEDA_KINDS,
    SCHEMAS,
    _compose_at_defaults,
    _configmap_env,
    _container,
    _one,
    _settings_from_env,
)

EXPORT = K8S / "export-otel"


@cache
def _docs() -> dict[str, dict[str, Any]]:
    """Kind -> the exporter's one manifest of that kind."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(EXPORT.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                assert doc["kind"] not in docs, f"two {doc['kind']}s"
                docs[doc["kind"]] = doc
    return docs


def _exporter_container() -> dict[str, Any]:
    [container] = _docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_exporter_manifests_validate_offline(version: str) -> None:
    """Deployment, Service, NetworkPolicy validate strictly; the ScaledObject against KEDA's."""
    for kind, doc in _docs().items():
        if kind in KEDA_KINDS:
            schema = json.loads((SCHEMAS / KEDA_KINDS[kind]).read_text())
            jsonschema.Draft202012Validator(schema).validate(doc)
        else:
            kubernetes_validate.validate(doc, version, strict=True)
    assert set(_docs()) == {"Deployment", "Service", "NetworkPolicy", "ScaledObject"}


def test_kustomization_lists_every_exporter_manifest() -> None:
    """export-otel/kustomization.yaml applies each file beside it."""
    listed = set(yaml.safe_load((EXPORT / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in EXPORT.glob("*.yaml")} - {"kustomization.yaml"}


def test_exporter_runs_the_worker_image_with_its_settings_and_probes() -> None:
    """Same image, ConfigMap and Secret as the worker; `export-otel`; probes on its port;
    the pod as locked down as the worker's; OTLP set by the standard variables."""
    container, worker = _exporter_container(), _container()
    assert container["image"] == worker["image"]
    assert container["args"] == ["export-otel"]
    assert container["envFrom"] == worker["envFrom"]
    env = {e["name"]: e for e in container["env"]}
    worker_env = {e["name"]: e for e in worker["env"]}
    for name in ("RUNSTEPS_CONSUMER", "RUNSTEPS_REDIS_URL"):
        assert env[name] == worker_env[name]
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    assert container["ports"] == worker["ports"]
    assert container["securityContext"] == worker["securityContext"]
    pod = _docs()["Deployment"]["spec"]["template"]["spec"]
    worker_pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == worker_pod["securityContext"]
    grace = float(_configmap_env()["RUNSTEPS_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > grace


def test_service_policy_and_scaler_select_the_exporter_pods_only() -> None:
    """The exporter's labels are its own: the worker's Service, PDB and policy skip it."""
    labels = _docs()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "export-otel"
    assert _docs()["Service"]["spec"]["selector"] == labels
    assert _docs()["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == labels
    assert _one("Service")["spec"]["selector"] != labels
    egress = {p["port"] for rule in _docs()["NetworkPolicy"]["spec"]["egress"]
              for p in rule["ports"]}  # fmt: skip
    assert {6379, 4317, 4318, 53} <= egress


def test_keda_scales_the_exporter_on_its_groups_derived_lag() -> None:
    """Lag and pending triggers on every derived partition stream, the exporter's group,
    the worker's TriggerAuthentication; from the Deployment's replica floor."""
    settings = _settings_from_env(_configmap_env())
    scaled = _docs()["ScaledObject"]["spec"]
    deployment = _docs()["Deployment"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["minReplicaCount"] == deployment["spec"]["replicas"]
    triggers = scaled["triggers"]
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {settings.export_group}
    streams = {p.derived_stream for p in partitions(settings)}
    assert {t["metadata"]["stream"] for t in triggers if "lagCount" in t["metadata"]} == streams
    assert {
        t["metadata"]["stream"] for t in triggers if "pendingEntriesCount" in t["metadata"]
    } == streams
    auth = _one("TriggerAuthentication")["metadata"]["name"]
    assert {t["authenticationRef"]["name"] for t in triggers} == {auth}


def test_keda_user_may_read_the_derived_streams() -> None:
    """The ACL's keda user has the derived streams' keys (XINFO GROUPS on them)."""
    acl = (Path(K8S).parent / "redis" / "users.acl").read_text().splitlines()
    [keda] = [line for line in acl if line.startswith("user keda ")]
    assert "~runsteps.derived*" in keda.split()


def test_compose_exporter_uses_the_workers_image_and_settings() -> None:
    """compose.yaml's export-otel service (profile `traces`): the worker's image, the
    configured derived stream and group, locked down, an OTLP endpoint to send to."""
    compose = _compose_at_defaults()
    service, worker = compose["services"]["export-otel"], compose["services"]["worker"]
    assert service["profiles"] == ["traces"]
    assert service["image"] == worker["image"]
    assert service["command"] == ["export-otel"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert env["RUNSTEPS_REDIS_URL"] == worker["environment"]["RUNSTEPS_REDIS_URL"]
    otel = {k: env.pop(k) for k in list(env) if k.startswith("OTEL_")}
    settings = _settings_from_env(env)
    configured = _settings_from_env(_configmap_env())
    assert settings.derived_stream == configured.derived_stream
    assert settings.export_group == configured.export_group
    assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    for key in ("read_only", "user", "cap_drop", "security_opt", "tmpfs"):
        assert service[key] == worker[key]
