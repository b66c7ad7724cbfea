"""pulse/health.py: one real server on a free loopback port, read with the stdlib HTTP client."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from pulse import health
from pulse.health import Check, HealthServer, Metrics, on_loop, verdict
from pulse.settings import Settings

LOCAL = Settings(bind_host="127.0.0.1")


class Demo(Metrics):
    def __init__(self) -> None:
        super().__init__()
        self.events = self.counter("demo_events", "Events seen.", ["topic"])
        self.lag = self.gauge("demo_lag", "Records waiting.")


def get(server: HealthServer, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of ``GET path``; error statuses too."""
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start servers on free ports; every one is stopped at the end of the test."""
    started: list[HealthServer] = []

    def start(metrics: Metrics | None = None, **checks: Check | None) -> HealthServer:
        server = health.start(LOCAL, 0, metrics or Demo(), **checks)
        assert server is not None
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- pure ------------------------------------------------------------------------------------


def _boom() -> bool:
    raise RuntimeError("no state yet")


@pytest.mark.parametrize(
    "result, code, body",
    [
        (True, 200, {"healthy": True}),
        (False, 503, {"healthy": False}),
        ({"healthy": True, "events": 3}, 200, {"healthy": True, "events": 3}),
        ({"healthy": False, "error": "fenced"}, 503, {"healthy": False, "error": "fenced"}),
        ({"events": 3}, 503, {"events": 3}),  # a mapping that does not say so is not healthy
    ],
)
def test_verdict(result: bool | Mapping[str, Any], code: int, body: dict[str, Any]) -> None:
    assert verdict(lambda: result, "healthy") == (code, body)


def test_a_check_that_raises_is_a_503_with_the_error() -> None:
    assert verdict(_boom, "ready") == (503, {"ready": False, "error": "RuntimeError: no state yet"})


def test_each_metrics_object_has_a_registry_of_its_own() -> None:
    a, b = Demo(), Demo()  # the same names twice: no "Duplicated timeseries" error
    a.events.labels("t").inc(2)
    assert a.value("demo_events_total", {"topic": "t"}) == 2.0
    assert b.value("demo_events_total", {"topic": "t"}) is None


# --- the server ------------------------------------------------------------------------------


def test_metrics_in_prometheus_text(serve: Any) -> None:
    metrics = Demo()
    metrics.events.labels("t").inc()
    metrics.lag.set(7)
    code, ctype, body = get(serve(metrics), "/metrics?name[]=demo_lag")  # a query is allowed
    assert (code, ctype) == (200, CONTENT_TYPE_LATEST)
    text = body.decode()
    assert 'demo_events_total{topic="t"} 1.0' in text.splitlines()
    assert "demo_lag 7.0" in text.splitlines()
    assert "process_resident_memory_bytes" in text  # every process also says what it costs


def test_healthz_answers_from_the_liveness_check(serve: Any) -> None:
    state = {"healthy": True, "events": 5}
    server = serve(live=lambda: state)
    assert get(server, "/healthz") == (200, "application/json", b'{"healthy": true, "events": 5}')
    state["healthy"] = False
    code, _, body = get(server, "/healthz")
    assert (code, json.loads(body)) == (503, {"healthy": False, "events": 5})


def test_readyz_answers_from_the_readiness_check(serve: Any) -> None:
    ready = threading.Event()
    server = serve(ready=lambda: {"ready": ready.is_set(), "partitions": 2})
    assert get(server, "/readyz")[0] == 503
    assert get(server, "/healthz")[0] == 200  # not ready yet is still alive
    ready.set()
    code, _, body = get(server, "/readyz")
    assert (code, json.loads(body)) == (200, {"ready": True, "partitions": 2})


def test_without_a_readiness_check_ready_follows_liveness(serve: Any) -> None:
    alive = [True]
    server = serve(live=lambda: {"healthy": alive[0]})
    code, _, body = get(server, "/readyz")
    assert (code, json.loads(body)) == (200, {"healthy": True, "ready": True})
    alive[0] = False
    code, _, body = get(server, "/readyz")
    assert (code, json.loads(body)) == (503, {"healthy": False, "ready": False})


def test_a_check_that_raises_answers_503_and_the_server_goes_on(serve: Any) -> None:
    server = serve(live=_boom)
    code, _, body = get(server, "/healthz")
    assert (code, json.loads(body)) == (
        503,
        {"healthy": False, "error": "RuntimeError: no state yet"},
    )
    assert get(server, "/metrics")[0] == 200


def test_other_paths_are_404(serve: Any) -> None:
    server = serve()
    assert get(server, "/")[0] == 404
    assert get(server, "/healthzz")[0] == 404


def test_the_log_says_where_it_serves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="pulse.health")
    with HealthServer("127.0.0.1", 0, Demo()) as server:  # tests find a port 0 server by it
        assert f"metrics and health on 127.0.0.1:{server.port} " in caplog.text


def test_port_minus_one_is_off() -> None:
    assert health.start(LOCAL, -1, Demo()) is None


def test_a_port_in_use_is_logged_and_the_process_goes_on(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    taken = serve().port
    assert health.start(LOCAL, taken, Demo()) is None
    assert f"127.0.0.1:{taken} unavailable" in caplog.text


def test_it_binds_the_configured_host(serve: Any) -> None:
    server = serve()
    assert server._server.server_address[0] == "127.0.0.1"  # loopback unless told otherwise
    assert Settings().bind_host == "127.0.0.1"


def test_stop_closes_the_port_and_may_be_called_twice() -> None:
    server = health.start(LOCAL, 0, Demo())
    assert server is not None
    assert get(server, "/healthz")[0] == 200
    server.stop()
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2)


def test_a_server_that_never_started_stops() -> None:
    with HealthServer("127.0.0.1", 0, Demo()) as server:
        port = server.port
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    HealthServer("127.0.0.1", 0, Demo()).stop()


# --- checks of an asyncio process --------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop turning on a thread of its own, as a worker's does."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_on_loop_runs_the_check_on_the_loop_thread(
    serve: Any, loop: asyncio.AbstractEventLoop
) -> None:
    seen: list[int] = []
    loop_thread = asyncio.run_coroutine_threadsafe(_thread_id(), loop).result(5)

    def ready() -> bool:
        seen.append(threading.get_ident())
        return True

    server = serve(ready=on_loop(loop, ready))
    assert get(server, "/readyz")[0] == 200
    assert seen == [loop_thread]


async def _thread_id() -> int:
    return threading.get_ident()


def test_a_loop_that_does_not_turn_fails_the_probe(
    serve: Any, loop: asyncio.AbstractEventLoop
) -> None:
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait, 10)  # the loop is stuck in a blocking call
    ran: list[bool] = []
    server = serve(live=on_loop(loop, lambda: ran.append(True) or True, timeout_s=0.2))
    code, _, body = get(server, "/healthz")
    assert (code, json.loads(body)) == (
        503, {"healthy": False, "error": "TimeoutError: event loop did not answer within 0.2 s"},
    )  # fmt: skip
    release.set()
    assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5) is None
    assert ran == []  # the check given up on is not run late
    assert get(server, "/healthz")[0] == 200  # turning again: alive again
    assert ran == [True]


def test_a_closed_loop_fails_the_probe(serve: Any) -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    code, _, body = get(serve(live=on_loop(closed, lambda: True)), "/healthz")
    assert (code, json.loads(body)) == (
        503, {"healthy": False, "error": "RuntimeError: Event loop is closed"},
    )  # fmt: skip
