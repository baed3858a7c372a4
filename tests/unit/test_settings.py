"""Settings read from RUNSTEPS_* variables: the partitions a replica reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

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
