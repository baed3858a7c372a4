"""The service's exceptions: one base class, one subclass per way things go wrong."""

from __future__ import annotations

__all__ = [
    "CommitConflictError",
    "ConfigError",
    "RedisServerNotFoundError",
    "RunstepsError",
    "StartupAbortedError",
]


class RunstepsError(Exception):
    """Base class of every error raised by runsteps itself."""


class ConfigError(RunstepsError):
    """The configuration cannot work (bad URL, wrong password, missing permission)."""


class CommitConflictError(RunstepsError):
    """A step's state kept changing under us; the batch is left pending for a retry."""


class RedisServerNotFoundError(RunstepsError):
    """No `redis-server` binary could be found to start a private Redis."""


class StartupAbortedError(RunstepsError):
    """The worker was told to stop (SIGTERM) while still waiting for Redis at start-up."""
