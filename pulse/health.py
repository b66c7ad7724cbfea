"""The health and metrics server of every long-running process, and how it declares metrics.

One small threaded HTTP server (stdlib) per process, on ``Settings.bind_host``:

* ``GET /healthz``: liveness, from a check (200 when it says healthy, 503 otherwise);
* ``GET /readyz``: readiness, from a second check (the liveness check when there is none);
* ``GET /metrics``: the process's :class:`Metrics` in Prometheus text format.

A check returns a bool or a JSON-able mapping holding ``healthy`` (liveness) or ``ready``
(readiness); the mapping is the response body. A check that raises answers 503.

Threads, not the process's own event loop: the same server serves a synchronous loop (the
producers' replay, the fan-out) and an asyncio one (the Firehose client, ``pulse alerts``, the
faust worker), and ``/metrics`` answers while the loop is busy. A check that must read state
owned by an event loop runs on that loop through :func:`on_loop`, which also makes a loop that
no longer turns fail its probe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from pulse.settings import Settings

log = logging.getLogger(__name__)

Check = Callable[[], bool | Mapping[str, Any]]
LOOP_TIMEOUT_S = 5.0  # an event loop slower than this to run a check is not answering
STOP_POLL_S = 0.25  # how soon stop() is noticed (shutdown waits for the serving thread)
REQUEST_TIMEOUT_S = 10.0  # a client that sends nothing for this long loses its connection


class Metrics:
    """The Prometheus metrics of one process (or one stage object), on a registry of its own.

    Subclass it and declare each metric in ``__init__`` with :meth:`counter` / :meth:`gauge`;
    the registry also carries the process, platform and GC collectors. Separate registries let
    a test run several stages in one process without their metrics colliding.
    """

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; Prometheus exposes it as ``<name>_total`` (and ``name`` may say so)."""
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, doc, list(labels), registry=self.registry)

    def exposition(self) -> bytes:
        """Everything in the registry, in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample's value (``name`` as exposed, e.g. ``…_total``), None if absent."""
        return self.registry.get_sample_value(name, dict(labels or {}))


def verdict(check: Check, key: str) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of one probe: 200 when ``check`` says ``key`` is true."""
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - a failing check is a failing probe, not a 500
        return 503, {key: False, "error": f"{type(exc).__name__}: {exc}"}
    body = {key: result} if isinstance(result, bool) else dict(result)
    return (200 if body.get(key) else 503), body


def on_loop(
    loop: asyncio.AbstractEventLoop, check: Check, timeout_s: float = LOOP_TIMEOUT_S
) -> Check:
    """``check`` run on ``loop``'s thread, where the state it reads is written.

    The returned check raises (so the probe answers 503) when the loop has not run it within
    ``timeout_s`` or is closed: a process whose loop stopped turning is not alive.
    """

    def hop() -> bool | Mapping[str, Any]:
        future: concurrent.futures.Future[bool | Mapping[str, Any]] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return  # given up on: do not load a late loop with stale work
            try:
                future.set_result(check())
            except Exception as exc:  # noqa: BLE001 - handed to the probe thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"event loop did not answer within {timeout_s:g} s") from None

    return hop


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on a thread of their own.

    ``port`` 0 picks a free port (read it back from :attr:`port`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        *,
        live: Check | None = None,
        ready: Check | None = None,
    ) -> None:
        self._server = _Server((host, port), _handler(metrics, live or (lambda: True), ready))
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(STOP_POLL_S,),
            name=f"health:{self.port}",
            daemon=True,
        )

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on %s:%d (/metrics, /healthz, /readyz)", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(
    settings: Settings,
    port: int,
    metrics: Metrics,
    *,
    live: Check | None = None,
    ready: Check | None = None,
) -> HealthServer | None:
    """Serve on ``settings.bind_host``:``port``; None when ``port`` < 0 (off) or it cannot
    bind (logged: the process does its work without the endpoint)."""
    if port < 0:
        return None
    try:
        return HealthServer(settings.bind_host, port, metrics, live=live, ready=ready).start()
    except OSError as exc:
        log.warning("metrics and health on %s:%d unavailable: %s", settings.bind_host, port, exc)
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:  # an IPv6 bind_host such as "::"
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a probe or scraper that hung up mid-answer is not worth a traceback on stderr
        log.debug("health request from %s failed", client_address, exc_info=True)


def _probe(path: str, live: Check, ready: Check | None) -> tuple[int, dict[str, Any]]:
    if path == "/healthz":
        return verdict(live, "healthy")
    if ready is not None:
        return verdict(ready, "ready")
    code, body = verdict(live, "healthy")  # no readiness of its own: ready while alive
    return code, {**body, "ready": code == 200}


def _handler(metrics: Metrics, live: Check, ready: Check | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, metrics.exposition())
            elif path in ("/healthz", "/readyz"):
                code, body = _probe(path, live, ready)
                self._send(code, "application/json", json.dumps(body, default=str).encode())
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes and scrapes every few seconds would drown the log

    return Handler
