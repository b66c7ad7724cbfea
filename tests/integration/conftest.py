"""Fixtures shared by integration tests: a private broker, a webhook receiver, ``pulse worker``
with default settings as a user runs it."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from pulse.local.stack import LocalStack, free_ports
from pulse.settings import Settings
from tests.integration.test_consumers import Webhook
from tests.integration.test_processors_replay import default_settings, start_worker, stop


@pytest.fixture
def replay_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings of a run of its own (topics, group, state, ports), all else the defaults."""
    return default_settings(settings, tmp_path)


@pytest.fixture
def worker(replay_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pulse worker`` (both stages) running for the test; its log in ``worker.log``."""
    proc = start_worker(replay_settings, tmp_path / "worker.log")
    yield proc
    stop(proc)


@pytest.fixture
def private_broker(settings: Settings, tmp_path: Path) -> Iterator[tuple[LocalStack, Settings]]:
    """A throwaway broker of this test's own (the shared one must never be stopped), and
    settings pointing at it; jars from the shared download cache."""
    downloads = Settings.from_env().local_downloads_path
    stack = LocalStack(tmp_path / "home", "private", free_ports(), downloads)
    try:
        endpoints = stack.up(timeout_s=240, registry=False)
        yield stack, settings.replace(bootstrap_servers=endpoints.bootstrap_servers)
    finally:
        stack.destroy()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    """A local webhook receiver counting the spikes ``pulse alerts`` posts to it."""
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/hook/{token}", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook/s3cret"
    yield hook
    await runner.cleanup()
