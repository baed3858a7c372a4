"""Settings read from RUNSTEPS_* variables: the partitions a replica reads, the consumer name."""

from __future__ import annotations

import os
import socket

import pytest
from pydantic import ValidationError

from service import settings as settings_module
from service.settings import Settings


def test_a_replica_reads_every_partition_unless_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTEPS_PARTITIONS", "4")
    assert Settings().owned_partitions == (0, 1, 2, 3)
    monkeypatch.setenv("RUNSTEPS_OWN_PARTITIONS", " 2, 0,2 ")
    assert Settings().owned_partitions == (0, 2)


@pytest.mark.parametrize("value", ["4", "0,4", "a", "0;1", "1,", "-1"])
def test_pinning_to_a_partition_that_does_not_exist_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RUNSTEPS_PARTITIONS", "4")
    monkeypatch.setenv("RUNSTEPS_OWN_PARTITIONS", value)
    with pytest.raises(ValidationError, match="own_partitions"):
        Settings()


def test_the_default_consumer_is_the_pod_name_in_a_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a pod the hostname alone (stable across restarts); elsewhere hostname-pid."""
    monkeypatch.delenv("RUNSTEPS_CONSUMER", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(settings_module, "_CONTAINER_MARKERS", ())  # not Docker/Podman either
    assert Settings().consumer == f"{socket.gethostname()}-{os.getpid()}"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert Settings().consumer == socket.gethostname()
