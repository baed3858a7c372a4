"""The AsyncAPI page renders in a real headless Chromium, with nothing fetched from elsewhere.

Needs Debian's `chromium` (`make test` installs it through .ci/ensure-chromium). Without it
this test fails, on purpose: a docs page nobody has seen render is not known to work.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.dev.redis_server import free_port
from service.settings import Settings
from tests.helpers import wait_until
from tests.system.workers import start_worker, stop_worker

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fetch(url: str) -> tuple[int, str]:
    """GET `url` (blocking): status and body; (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
async def docs_url(settings: Settings) -> AsyncIterator[str]:
    """A `runsteps worker` process for this test's streams; the URL of its AsyncAPI page."""
    port = free_port()
    proc = start_worker(settings, settings.consumer, RUNSTEPS_HTTP_PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited: {stop_worker(proc)}")
        return (await asyncio.to_thread(fetch, f"{base}/healthz"))[0] == 200

    try:
        await wait_until(up, timeout_s=30, what="worker /healthz")
        yield f"{base}/docs/asyncapi"
    finally:
        await asyncio.to_thread(stop_worker, proc)


def chromium_binary() -> str:
    """The Chromium to run; fails (never skips) when there is none."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: run `bash .ci/ensure-chromium` (apt-get install chromium) "
            "or set CHROMIUM to a Chromium binary"
        )
    return CHROMIUM


async def chromium(*args: str, timeout_s: float = 45.0) -> bytes:
    """Run headless Chromium on a throwaway profile, background traffic off; its stdout."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="runsteps-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def test_asyncapi_page_renders_in_chromium(docs_url: str, settings: Settings) -> None:
    """Chromium renders /docs/asyncapi to a real screenshot; its DOM names the three streams."""
    status, page = await asyncio.to_thread(fetch, docs_url)
    assert status == 200
    assert re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) is None, "external asset"
    assert "<script" not in page

    with tempfile.TemporaryDirectory(prefix="runsteps-shot-") as tmp:
        shot = Path(tmp) / "page.png"
        await chromium(f"--screenshot={shot}", "--window-size=1280,2000", docs_url)
        png = shot.read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 50_000  # a blank 1280x2000 page is about 12 KB; this one is ~170 KB

    dom = (await chromium("--dump-dom", docs_url)).decode()
    for stream in (settings.source_stream, settings.derived_stream, settings.dlq_stream):
        assert f"<code>{stream}</code>" in dom
    assert "consumed by the worker" in dom
    assert dom.count("published by the worker") == 2
    assert 'id="schema-DeadLetterEntry"' in dom
