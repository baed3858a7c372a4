"""CPU caps for worker processes, as a Kubernetes pod's `resources.limits.cpu` sets one.

Each capped process gets a cgroup of its own with a CFS quota: cgroup v2 (`cpu.max`) where
its cpu controller is enabled, else cgroup v1's cpu controller (`cpu.cfs_quota_us`). That
needs write access to the cgroup file system (root, with it mounted read-write); where there
is none, `unavailable()` says why and the capped scenarios are left out of the run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["CpuCap", "unavailable"]

PERIOD_US = 100_000
_V2 = Path("/sys/fs/cgroup")
_V1 = Path("/sys/fs/cgroup/cpu")


def _root() -> tuple[Path, bool]:
    """The cgroup directory to create caps in, and whether it is cgroup v2."""
    controls = _V2 / "cgroup.subtree_control"
    if controls.exists() and "cpu" in controls.read_text().split():
        return _V2, True
    if (_V1 / "cpu.cfs_quota_us").exists():
        return _V1, False
    raise OSError("no cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us) found")


class CpuCap:
    """Caps each process `add`ed at `cores` CPUs, in a cgroup of its own (one pod each)."""

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self._root, self._v2 = _root()
        self._groups: list[Path] = []

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into a new cgroup with the quota."""
        group = self._root / f"runsteps-bench-{os.getpid()}-{pid}"
        group.mkdir()
        self._groups.append(group)
        quota = round(self.cores * PERIOD_US)
        if self._v2:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        """Remove the cgroups (once their processes have exited)."""
        for group in self._groups:
            with contextlib.suppress(OSError):
                group.rmdir()
        self._groups = []


def unavailable() -> str | None:
    """Why processes cannot be capped here, or None if they can."""
    try:
        root, _ = _root()
        probe = root / f"runsteps-bench-probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"cannot create a cgroup with a CPU quota: {exc}"
    return None
