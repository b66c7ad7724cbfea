"""The live board as a web page (aiohttp): the terminal board's table, spikes and a volume
chart per symbol. One self-contained page, no external assets; it polls ``/api/board``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from pulse.consumers.board import Board, snapshot

PAGE = (Path(__file__).resolve().parent / "board.html").read_text()


def make_app(
    get_board: Callable[[], Board],
    top: int = 15,
    get_waiting: Callable[[], str | None] | None = None,
) -> web.Application:
    """The page at ``/`` and its data at ``/api/board``, from whatever ``get_board`` returns
    (and ``get_waiting``: what the board is waiting for, shown above an empty table)."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def board(_: web.Request) -> web.Response:
        waiting = get_waiting() if get_waiting is not None else None
        return web.json_response(snapshot(get_board(), top, waiting))

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/api/board", board)
    return app


def serve_in_thread(
    get_board: Callable[[], Board],
    port: int,
    host: str = "127.0.0.1",
    top: int = 15,
    get_waiting: Callable[[], str | None] | None = None,
) -> tuple[threading.Thread, Callable[[], None]]:
    """Serve the page from a daemon thread (the board's reader keeps the main thread).

    Returns the thread and a function that stops the server.
    """
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(get_board, top, get_waiting), access_log=None)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="board-web", daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return thread, stop
