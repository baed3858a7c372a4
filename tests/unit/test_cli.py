"""The `runsteps` command in-process: the event loop choice, refused settings."""

from __future__ import annotations

import asyncio
import builtins
from pathlib import Path
from typing import Any

import pytest
import uvloop

from service.edge.cli import _runner, main
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


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://localhost:99999/0", "Port out of range"),
        ("redis://user:s3cret@localhost:port/0", "Port could not be cast to integer"),
        ("http://localhost:6379/0", "must specify one of the following schemes"),
    ],
)
def test_a_bad_redis_url_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, reason: str
) -> None:
    """A Redis URL redis-py would refuse: exit 2, one line naming the variable, no secret."""
    monkeypatch.setenv("RUNSTEPS_REDIS_URL", url)
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("runsteps worker: configuration error: RUNSTEPS_REDIS_URL: ")
    assert reason in err
    assert "s3cret" not in err


def test_every_command_refuses_bad_settings_the_same_way(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any invalid setting, any command that reads settings: exit 2 and one line."""
    monkeypatch.setenv("RUNSTEPS_BATCH_SIZE", "many")
    assert main(["inspect", "--run", "run_1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "RUNSTEPS_BATCH_SIZE: Input should be a valid integer" in err


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"RUNSTEPS_HTTP_TOKEN": "s3cret-short"}, "fewer than 16 characters"),
        ({"RUNSTEPS_HTTP_TOKEN_FILE": "/nonexistent/token"}, "cannot be read"),
        ({"RUNSTEPS_HTTP_TOKEN_FILE": "EMPTY"}, "fewer than 16 characters"),
        (
            {"RUNSTEPS_HTTP_TOKEN": "s3cret-token-0123456789", "RUNSTEPS_HTTP_TOKEN_FILE": "EMPTY"},
            "not both",
        ),
    ],
)
def test_a_token_that_cannot_work_exits_2_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    env: dict[str, str],
    reason: str,
) -> None:
    """An HTTP token too short, a token file unreadable or blank, or both set: exit 2, one
    line, never the token."""
    (tmp_path / "empty").write_text(" \n")
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / "empty") if value == "EMPTY" else value)
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert reason in err
    assert "s3cret" not in err
