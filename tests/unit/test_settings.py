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


BUDGETS = ("budget_tokens", "budget_usd", "budget_steps", "budget_seconds")


def test_budgets_and_the_prices_file_are_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset or empty (as the ConfigMap lists them): no budget, no prices file."""
    for name in (*BUDGETS, "prices_file"):
        monkeypatch.delenv(f"RUNSTEPS_{name.upper()}", raising=False)
    assert all(getattr(Settings(), name) is None for name in (*BUDGETS, "prices_file"))
    for name in (*BUDGETS, "prices_file"):
        monkeypatch.setenv(f"RUNSTEPS_{name.upper()}", "")
    assert all(getattr(Settings(), name) is None for name in (*BUDGETS, "prices_file"))
    assert Settings().metrics_max_labels == 100


def test_budgets_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each budget is its variable's value: whole tokens and steps, dollars and seconds."""
    for name, value in zip(BUDGETS, ("200000", "2.50", "40", "900.5"), strict=True):
        monkeypatch.setenv(f"RUNSTEPS_{name.upper()}", value)
    s = Settings()
    assert (s.budget_tokens, s.budget_usd, s.budget_steps, s.budget_seconds) == (
        200_000,
        2.5,
        40,
        900.5,
    )


@pytest.mark.parametrize("name", [*BUDGETS, "metrics_max_labels"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "lots"])
def test_a_budget_or_label_bound_not_above_zero_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Zero, negative, infinite or not a number: a validation error naming the setting."""
    monkeypatch.setenv(f"RUNSTEPS_{name.upper()}", value)
    with pytest.raises(ValidationError, match=name):
        Settings()
