"""Credentials in every URL setting never reach a log line or a record.

Real producer processes (`pulse produce …`, at DEBUG) run against the fake upstream and the real
Kafka + registry, with `user:password@` in PULSE_SCHEMA_REGISTRY_URL and in every upstream URL
(and a few hostile answers, so the error paths log too); all they print, and every record they
write, is searched for the passwords.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pulse.schemas.topics import DEAD_LETTER, MESSAGES, SENTIMENT_CHART, TRENDING
from pulse.settings import Settings
from tests.conftest import consume
from tests.support.stocktwits_server import FakeStocktwits, message, message_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "registry": "Reg1stryPassw0rd",
    "trending": "Tr3ndingUrlPass",
    "chart": "Ch4rtUrlPass",
    "rest": "R3stUrlPass",
    "firehose": "F1rehoseUrlPass",
    "api_key": "ApiKeyS3cretValue",
    "firehose_password": "F1rehoseBasicPass",
}


def with_userinfo(url: str, user: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeStocktwits]:
    server = FakeStocktwits(
        api_key=SECRETS["api_key"],
        password=SECRETS["firehose_password"],
        events=message_events(20),
        close_at_end=True,
    )
    server.trending_pages = {
        1: {"data": {"page": 1, "has_more": False, "trending_symbols": [{"symbol": "AAPL"}]}}
    }
    point = {"dateTime": "2025-04-29T13:30:00Z", "sentimentNormalized": 60}
    server.charts = {"AAPL": {"data": {"2025-04-29T13:30:00Z": point}}}
    server.rest = {"symbol/AAPL": [{"messages": [message(7, ["AAPL"])]}]}
    server.trending_429 = 1  # retry lines name the URL
    server.chart_503 = 1
    server.hostile = {"rest": ["bomb"]}  # an error line and a dead letter name it too
    await server.start()
    yield server
    await server.stop()


def environment(settings: Settings, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    return {
        **env,
        "PULSE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PULSE_SCHEMA_REGISTRY_URL": with_userinfo(
            settings.schema_registry_url, "reg", SECRETS["registry"]
        ),
        "PULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "PULSE_RAW_PARTITIONS": "1",
        "PULSE_REPLICATION_FACTOR": "1",
        "PULSE_LOG_LEVEL": "DEBUG",
        "PULSE_TRENDING_URL": with_userinfo(f"{url}/trending", "t", SECRETS["trending"]),
        "PULSE_TRENDING_API_KEY": SECRETS["api_key"],
        "PULSE_CHART_URL": with_userinfo(f"{url}/chart", "c", SECRETS["chart"]),
        "PULSE_REST_URL": with_userinfo(f"{url}/api/2", "r", SECRETS["rest"]),
        "PULSE_FIREHOSE_URL": with_userinfo(url, "f", SECRETS["firehose"]),
        "PULSE_FIREHOSE_USERNAME": "user",
        "PULSE_FIREHOSE_PASSWORD": SECRETS["firehose_password"],
        "PULSE_METRICS_PORT": "-1",
    }


async def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pulse.cli", "produce", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


# (arguments, exit code): basic auth from the settings and user info in the URL cannot go
# together, so the chart poller and the Firehose refuse to start, saying which variable
RUNS = [
    (("trending", "--once"), 0),
    (("rest", "--once", "--streams", "symbol:AAPL", "--min-interval", "0"), 0),
    (("chart", "--once", "--symbols", "AAPL"), 2),
    (("firehose", "--max-events", "20", "--no-resume"), 2),
]


async def test_no_credential_reaches_any_log_line_or_record(
    settings: Settings, fake: FakeStocktwits
) -> None:
    env = environment(settings, fake.url)
    logs = []
    for args, expected in RUNS:
        code, out = await run(env, *args)
        logs.append(f"$ pulse produce {' '.join(args)} → {code}\n{out}")
        assert code == expected, logs[-1][-3000:]
        if expected == 2:
            assert "holds user info" in out and "Traceback" not in out, out[-3000:]
    text = "\n".join(logs)
    # the runs did log, at DEBUG, about the URLs: the search below has something to search
    assert "***@" in text and "DEBUG" in text, text[-3000:]
    assert "too_large" in text  # the hostile body took the error path
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name}'s secret is in the log:\n{text[-3000:]}"
    cfg = settings.replace(topic_prefix=env["PULSE_TOPIC_PREFIX"])
    records = b""
    for spec in (TRENDING, SENTIMENT_CHART, MESSAGES, DEAD_LETTER):
        for m in consume(cfg, spec.full_name(cfg), 1_000, timeout_s=3):
            records += (m.key() or b"") + (m.value() or b"")
            records += b"".join(v for _, v in m.headers() or ())
    assert records, "nothing was written"
    for name, secret in SECRETS.items():
        assert secret.encode() not in records, f"{name}'s secret is in a record"
