"""The worker command's choice of event loop (RUNSTEPS_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from service.cli import _runner
from service.errors import ConfigError


def test_auto_takes_uvloop_when_installed() -> None:
    assert _runner("auto") is uvloop.run
    assert _runner("uvloop") is uvloop.run


def test_asyncio_is_the_standard_loop() -> None:
    assert _runner("asyncio") is asyncio.run


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert _runner("auto") is asyncio.run
    with pytest.raises(ConfigError, match="not installed"):
        _runner("uvloop")
