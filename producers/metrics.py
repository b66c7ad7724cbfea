"""Prometheus metrics and the /metrics + /healthz endpoint of one producer process."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

log = logging.getLogger(__name__)

EVENTS = Counter(
    "pulse_producer_events_total", "Records acknowledged by Kafka.", ["source", "topic"]
)
BYTES = Counter("pulse_producer_bytes_total", "Upstream payload bytes received.", ["source"])
RECONNECTS = Counter(
    "pulse_producer_reconnects_total",
    "Upstream (re)connection attempts after a failure.",
    ["source", "cause"],
)
DEAD_LETTERS = Counter(
    "pulse_producer_dead_letters_total",
    "Inputs sent to the dead-letter topic.",
    ["source", "reason"],
)
DELIVERY_ERRORS = Counter(
    "pulse_producer_delivery_errors_total", "Records Kafka did not accept.", ["source", "topic"]
)
DUPLICATES = Counter(
    "pulse_producer_duplicates_skipped_total",
    "Upstream items skipped as already written.",
    ["source"],
)
LAST_SEQ = Gauge(
    "pulse_producer_last_seq_id",
    "Last Firehose seq_id acknowledged (float: approximate).",
    ["source"],
)
LAST_EVENT = Gauge(
    "pulse_producer_last_event_timestamp_seconds",
    "Wall clock of the last upstream event.",
    ["source"],
)


class HealthServer:
    """``GET /metrics`` (Prometheus text) and ``GET /healthz`` (200 healthy, 503 not).

    A plain threaded HTTP server: it answers even while the producer's own loop is busy.
    """

    def __init__(self, port: int, health: Callable[[], dict[str, Any]], host: str = "0.0.0.0"):
        handler = _handler(health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        host = self._server.server_address[0]
        log.info("metrics and health on %s:%d (/metrics, /healthz)", host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(health: Callable[[], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, CONTENT_TYPE_LATEST, generate_latest())
            elif self.path.startswith("/healthz"):
                status = health()
                code = 200 if status.get("healthy") else 503
                self._send(code, "application/json", json.dumps(status).encode())
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the log

    return Handler


def start_health_server(
    port: int, health: Callable[[], dict[str, Any]], host: str = "0.0.0.0"
) -> HealthServer | None:
    """Start the endpoint; port 0 picks a free port, a negative port disables it.

    :param host: ``Settings.bind_host`` (loopback unless in a container); the default is for
        callers not yet passing it.
    """
    if port < 0:
        return None
    try:
        return HealthServer(port, health, host).start()
    except OSError as exc:
        log.warning("metrics endpoint on %s:%d unavailable: %s", host, port, exc)
        return None
