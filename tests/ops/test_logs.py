"""Structured logs (ids only, never payloads) and optional OpenTelemetry tracing."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from service.dev.sample import step
from service.edge.logs import ID_FIELDS, JsonFormatter, configure_logging
from service.errors import ConfigError
from service.settings import Settings
from service.worker.app import build_worker
from tests.helpers import drained, wait_until
from tests.system.workers import start_worker, stop_worker

SECRET = "tell-no-one-4f1c"


def record(**extra: object) -> logging.LogRecord:
    """A log record as `log.info("committed %d", 3, extra=...)` makes it."""
    rec = logging.getLogger("runsteps.test").makeRecord(
        "runsteps.test", logging.INFO, __file__, 1, "committed %d", (3,), None
    )
    rec.__dict__.update(extra)
    return rec


def test_json_line_has_fields_and_only_id_extras() -> None:
    """A JSON line has ts, level, logger, message and the id extras; other extras are dropped."""
    line = JsonFormatter({"consumer": "c-1"}).format(
        record(
            step_id="step_1",
            run_id="run_1",
            source_id=b"1700000000000-0",
            payload={"step_details": SECRET},
            data=SECRET,
            fields={b"data": SECRET.encode()},
        )
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed.pop("ts").endswith("+00:00")
    assert parsed == {
        "level": "INFO",
        "logger": "runsteps.test",
        "message": "committed 3",
        "consumer": "c-1",
        "step_id": "step_1",
        "run_id": "run_1",
        "source_id": "1700000000000-0",
    }
    assert SECRET not in line
    assert set(parsed) - {"level", "logger", "message"} <= set(ID_FIELDS)


def test_json_exception_stays_on_one_line() -> None:
    """An exception's traceback is a field of the one JSON line, not extra lines."""
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record()
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc_info"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the library loggers back as they were."""
    names = ["", "faststream", "faststream.access", "uvicorn", "uvicorn.error", "uvicorn.access"]
    saved = {}
    for name in names:
        lg = logging.getLogger(name)
        saved[name] = (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_sends_every_logger_through_one_json_handler(
    settings: Settings,
) -> None:
    """Ours, FastStream's and uvicorn's records all come out as JSON; access lines are off."""
    out = io.StringIO()
    configure_logging(settings.model_copy(update={"log_level": "DEBUG"}), stream=out)
    logging.getLogger("runsteps.test").debug("ours", extra={"step_id": "s1"})
    logging.getLogger("faststream").info("theirs")
    logging.getLogger("uvicorn.error").warning("server")
    logging.getLogger("uvicorn.access").info('"GET /metrics HTTP/1.1" 200')
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("runsteps.test", "ours"),
        ("faststream", "theirs"),
        ("uvicorn.error", "server"),
    ]
    assert lines[0]["step_id"] == "s1"
    assert {r["consumer"] for r in lines} == {settings.consumer}


@pytest.mark.usefixtures("restore_logging")
def test_text_format_and_level(settings: Settings) -> None:
    """RUNSTEPS_LOG_FORMAT=text writes plain lines; the level (any case) filters them."""
    out = io.StringIO()
    configure_logging(settings.model_copy(update={"log_format": "text"}), stream=out)
    assert Settings(log_level="warning").log_level == "WARNING"
    logging.getLogger("runsteps.test").debug("hidden")
    logging.getLogger("runsteps.test").info("shown")
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" INFO runsteps.test shown")


def test_per_batch_faststream_lines_are_debug(settings: Settings) -> None:
    """FastStream's Received/Processed lines log at DEBUG; our logger's own level is untouched."""
    worker = build_worker(settings)
    assert worker.broker.config.logger.log_level == logging.DEBUG
    assert logging.getLogger("runsteps.app").level == logging.NOTSET


async def test_worker_process_writes_json_lines_only(redis: Redis, settings: Settings) -> None:
    """A `runsteps worker` process logs JSON lines only, with no per-batch INFO lines."""
    proc = start_worker(settings, settings.consumer)
    try:
        await redis.xadd(settings.source_stream, {"data": json.dumps(step("w1", "in_progress"))})
        await wait_until(
            lambda: drained(redis, settings.source_stream, settings.group), what="drained"
        )
    finally:
        err = await asyncio.to_thread(stop_worker, proc)
    lines = [json.loads(line) for line in err.splitlines()]
    assert any(r["logger"] == "runsteps.app" for r in lines)
    assert all({"ts", "level", "logger", "message", "consumer"} <= r.keys() for r in lines)
    assert all(r["level"] != "DEBUG" for r in lines)
    assert "Received" not in {r["message"] for r in lines}


@functools.cache
def spans() -> InMemorySpanExporter:
    """An in-memory exporter behind the process-wide tracer provider (set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


async def test_otel_traces_each_consumed_batch(redis: Redis, settings: Settings) -> None:
    """With RUNSTEPS_OTEL_ENABLED a consumed batch makes a `process` span; events still flow."""
    exporter = spans()
    worker = build_worker(settings.model_copy(update={"otel_enabled": True}))
    await worker.start()
    try:
        await redis.xadd(settings.source_stream, {"data": json.dumps(step("o1", "in_progress"))})
        await wait_until(
            lambda: drained(redis, settings.source_stream, settings.group), what="drained"
        )
    finally:
        await worker.stop()
    assert await redis.xlen(settings.derived_stream) == 1
    names = {s.name for s in exporter.get_finished_spans()}
    assert f"{settings.source_stream} process" in names


def test_otel_without_the_package_is_a_config_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enabling tracing without OpenTelemetry installed fails at once, saying what to install."""
    monkeypatch.setitem(sys.modules, "faststream.redis.opentelemetry", None)
    with pytest.raises(ConfigError, match=r"runsteps\[otel\]"):
        build_worker(settings.model_copy(update={"otel_enabled": True}))
