"""Faust's own ceiling: a no-op agent that only counts the raw topic's records.

Run by ``bench/processors_bench.py`` over the same backlog as the worker, so the worker's rate
can be read against what faust itself delivers on this machine (not a pipeline component).
Environment: ``NOOP_BROKER``, ``NOOP_TOPIC``, ``NOOP_COUNT``, ``NOOP_DATADIR``; prints one line
``faust-noop <events/s>`` and exits when ``NOOP_COUNT`` records were seen.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

import faust

TOPIC, COUNT = os.environ.get("NOOP_TOPIC", "raw"), int(os.environ.get("NOOP_COUNT", "1"))
app = faust.App(
    f"faust-noop-{uuid.uuid4().hex[:8]}",
    broker=f"kafka://{os.environ.get('NOOP_BROKER', '127.0.0.1:9092')}",
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    store="memory://",
    datadir=os.environ.get("NOOP_DATADIR", "/tmp/faust-noop"),
)
raw = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                value_serializer="raw")
state: dict[str, Any] = {"n": 0, "t0": None}


@app.agent(raw)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for _ in stream.events():
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        state["n"] += 1
        if state["n"] >= COUNT:
            print(f"faust-noop {state['n'] / (time.perf_counter() - state['t0']):.0f}",
                  flush=True)
            sys.stdout.flush()
            os._exit(0)  # a measurement, not a service: no graceful shutdown to wait for


if __name__ == "__main__":
    app.main()
