"""The service's exceptions: one base class, one subclass per way things go wrong, and the
Redis errors that mean "Redis is unavailable", not "this entry is bad"."""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "INFRASTRUCTURE_ERRORS",
    "ConfigError",
    "RedisServerNotFoundError",
    "RunstepsError",
    "StartupAbortedError",
]


class RunstepsError(Exception):
    """Base class of every error raised by runsteps itself."""


class ConfigError(RunstepsError):
    """The configuration cannot work (bad URL, wrong password, missing permission)."""


class RedisServerNotFoundError(RunstepsError):
    """No `redis-server` binary could be found to start a private Redis."""


class StartupAbortedError(RunstepsError):
    """The worker was told to stop (SIGTERM) while still waiting for Redis at start-up."""


INFRASTRUCTURE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,  # maxmemory reached (noeviction): no write succeeds until memory is freed
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
    OSError,
)
"""Errors that say Redis (or a cluster node) is unavailable, not that an entry is bad."""
