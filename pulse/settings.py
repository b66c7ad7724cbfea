"""The one configuration object of stocktwits-pulse, read from ``PULSE_*`` environment variables.

Producers, processors, the CLI and the embedded stack all take a :class:`Settings`;
nothing else reads ``os.environ``. ``python -m pulse.settings`` prints the README table.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PREFIX = "PULSE_"


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


def _setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every knob of the pipeline. Field ``foo_bar`` is set by ``PULSE_FOO_BAR``."""

    # --- Kafka ---------------------------------------------------------------------------
    bootstrap_servers: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers.")
    schema_registry_url: str = _setting(
        "http://127.0.0.1:8081/apis/ccompat/v7",
        "Confluent-API schema registry URL (Apicurio: `…/apis/ccompat/v7`).",
    )
    schema_registry_auth: str = _setting(
        "", "`user:password` for the schema registry (basic auth).", secret=True
    )
    security_protocol: str = _setting("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str = _setting("", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str = _setting("", "SASL user name.")
    sasl_password: str = _setting("", "SASL password.", secret=True)
    ssl_ca_location: str = _setting("", "CA bundle (PEM) to verify the brokers.")
    ssl_certificate_location: str = _setting("", "Client certificate (PEM) for mutual TLS.")
    ssl_key_location: str = _setting("", "Client private key (PEM) for mutual TLS.")
    topic_prefix: str = _setting(
        "", "Prepended to every topic name (e.g. `dev.`); also namespaces schema subjects."
    )
    raw_partitions: int = _setting(6, "Partitions of topics keyed by upstream id.")
    symbol_partitions: int = _setting(
        6, "Partitions of symbol-keyed topics; the most signals workers that can share work."
    )
    replication_factor: int = _setting(1, "Replication factor of topics the pipeline creates.")
    # --- Processors ------------------------------------------------------------------------
    app_id: str = _setting(
        "stocktwits-pulse", "Faust app id: consumer group and prefix of its internal topics."
    )
    windows: str = _setting("1m,5m,1h", "Tumbling event-time windows.")
    hopping_windows: str = _setting("1h/5m", "Hopping windows as `size/advance`; empty for none.")
    grace_ms: int = _setting(
        30_000, "How far behind the newest event time a mention may arrive and still count."
    )
    idle_close_s: float = _setting(
        10.0,
        "Wall-clock seconds without input after which the windows that are over by the clock "
        "(end + grace passed) close without waiting for more data; running windows stay open.",
    )
    raw_idle_ms: int = _setting(
        2_000,
        "How long a raw partition must be caught up before it stops holding the watermark back.",
    )
    processing_guarantee: str = _setting("at_least_once", "at_least_once or exactly_once.")
    store: str = _setting("memory", "Table store: memory, or rocksdb (needs rocksdict).")
    web_port: int = _setting(
        6066,
        "Port of the signals stage's /metrics, /healthz and /readyz "
        "(`pulse worker --stage signals`).",
    )
    fan_out_port: int = _setting(
        6067,
        "Port of the fan-out stage's /metrics, /healthz and /readyz "
        "(`pulse worker --stage fan-out`).",
    )
    spike_min_count: int = _setting(
        10, "A burst needs at least this much scored volume (`spike_scored`) in its window."
    )
    spike_z: float = _setting(4.0, "Spike threshold: z-score of the window against the baseline.")
    spike_cooldown_windows: int = _setting(
        3, "A burst fires only after more than this many calm windows since the last elevated one."
    )
    spike_windows: str = _setting(
        "5m", "Tumbling window sizes the burst detector scores (each must be in `windows`)."
    )
    spike_warmup_windows: int = _setting(
        12, "Windows a symbol's burst baseline must have seen before it may fire."
    )
    spike_alpha: float = _setting(
        0.05, "EWMA weight of the newest window in a symbol's baseline (memory ≈ 1/alpha)."
    )
    spike_scored: str = _setting(
        "users",
        "Volume the spike detectors score: `users` (distinct users, so one account's flood "
        "is not a crowd) or `messages`. Message counts are reported either way.",
    )
    surge_window: str = _setting(
        "1h",
        "Tumbling window the hour-scale surge detector scores (must divide a day and "
        "be in `windows`); empty: no surge detector.",
    )
    surge_spans: str = _setting(
        "1h,3h,6h",
        "Spans the surge detector tests, each summing the windows ending at the "
        "closed one (multiples of `surge_window`).",
    )
    surge_p: float = _setting(
        1e-5, "Surge threshold: negative-binomial p-value (Bonferroni over the spans)."
    )
    surge_min_count: int = _setting(
        12, "A surge needs at least this much scored volume over its span."
    )
    surge_min_ratio: float = _setting(
        2.0, "A surge needs at least this many times its expected volume over its span."
    )
    surge_warmup_days: int = _setting(
        5, "Days a symbol's hour-of-day profile must have seen before it may surge."
    )
    revision_horizon_ms: int = _setting(
        3_600_000, "How long after a window's end a destroy still yields a corrected result."
    )
    state_dir: str = _setting(
        "", "Faust data directory (RocksDB tables); empty: `<local_home>/faust`."
    )
    # --- Producers -------------------------------------------------------------------------
    firehose_url: str = _setting(
        "https://firestream.stocktwits.com", "Firehose base URL (`/stream`, `/sentiment`)."
    )
    firehose_username: str = _setting("", "Firehose basic-auth user name.")
    firehose_password: str = _setting("", "Firehose basic-auth password.", secret=True)
    firehose_read_timeout_s: float = _setting(
        90.0, "Read timeout on the Firehose connection (upstream asks for > 30 s)."
    )
    trending_url: str = _setting(
        "https://api.parse.bot/scraper/09e16524-4533-449c-b713-8f1299802060/get_trending_symbols",
        "Trending-symbols endpoint.",
    )
    trending_api_key: str = _setting("", "X-API-Key of the trending-symbols API.", secret=True)
    trending_interval_s: float = _setting(300.0, "Trending poll interval (upstream: 5 min).")
    chart_url: str = _setting(
        "https://api-gw-prd.stocktwits.com/api-middleware/external/sentiment/v2",
        "Sentiment-chart v2 base URL.",
    )
    chart_symbols: str = _setting("", "Comma-separated symbols to poll the sentiment chart for.")
    chart_zoom: str = _setting("1D", "Sentiment-chart zoom: 1D, 1W, 1M, 3M, 6M, 1Y, ALL.")
    rest_url: str = _setting("https://api.stocktwits.com/api/2", "REST API v2 base URL.")
    rest_token: str = _setting("", "OAuth2 bearer token for the REST API (optional).", secret=True)
    rest_streams: str = _setting(
        "trending", "REST streams to poll: `trending`, `all`, `symbol:AAPL`, comma-separated."
    )
    metrics_port: int = _setting(
        9300, "Port of the /metrics, /healthz and /readyz of a producer or `pulse alerts`."
    )
    bind_host: str = _setting(
        "127.0.0.1",
        "Address the /metrics, /healthz and /readyz servers listen on; loopback outside "
        "containers, `0.0.0.0` in images (Compose, Kubernetes) so probes and Prometheus "
        "reach them.",
    )
    # --- Consumers --------------------------------------------------------------------------
    alert_webhook_urls: str = _setting(
        "", "Comma-separated webhook URLs `pulse alerts` POSTs each spike to.", secret=True
    )
    alert_max_attempts: int = _setting(
        6, "Attempts per webhook before a spike goes to the dead-letter topic."
    )
    alert_backoff_s: float = _setting(
        0.5, "First retry delay of `pulse alerts`; doubles per attempt (jittered)."
    )
    alert_backoff_max_s: float = _setting(30.0, "Longest retry delay of `pulse alerts`.")
    alert_timeout_s: float = _setting(10.0, "Timeout of one webhook request.")
    # --- Embedded local stack ---------------------------------------------------------------
    local_home: str = _setting(
        "~/.cache/stocktwits-pulse", "Where `pulse local` keeps jars, data and logs."
    )
    local_downloads: str = _setting(
        "",
        "Where `pulse local` keeps the Kafka and registry downloads (shareable between "
        "homes, e.g. a CI cache); empty: `<local_home>`.",
    )
    local_kafka_port: int = _setting(9092, "Embedded broker port (127.0.0.1).")
    local_controller_port: int = _setting(9093, "Embedded KRaft controller port.")
    local_registry_port: int = _setting(8081, "Embedded Apicurio Registry port.")
    log_level: str = _setting("INFO", "Log level of every command.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``PULSE_*`` variables (``os.environ`` by default) plus overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(f, raw)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def local_home_path(self) -> Path:
        return Path(self.local_home).expanduser()

    @property
    def local_downloads_path(self) -> Path:
        return Path(self.local_downloads or self.local_home).expanduser()

    def kafka_config(self) -> dict[str, str]:
        """librdkafka connection and security keys, shared by every client."""
        cfg = {"bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol != "PLAINTEXT":
            cfg["security.protocol"] = self.security_protocol
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        cfg.update({k: v for k, v in optional.items() if v})
        return cfg

    def registry_config(self) -> dict[str, Any]:
        # a registry call that never answers must fail (and be retried or dead-lettered),
        # not hang a producer or a worker: the client has no timeout by default
        cfg: dict[str, Any] = {"url": self.schema_registry_url, "timeout": 30}
        if self.schema_registry_auth:
            cfg["basic.auth.user.info"] = self.schema_registry_auth
        return cfg

    def topic(self, base_name: str) -> str:
        """Full name of a topic, with the configured prefix."""
        return self.topic_prefix + base_name

    def __repr__(self) -> str:  # secrets must never reach a log line
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif f.name.endswith("_url") and value:  # a URL may carry user:password@
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")
_AUTHORITY = re.compile(r"[^/?#]*")


def _printable(text: str, limit: int) -> str:
    # a URL from config or upstream may hold ESC, newlines or other bytes meant for a terminal
    cleaned = "".join(c if " " < c < "\x7f" else "?" for c in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")


def redact_url(url: str) -> str:
    """``url`` safe for a log line, an exception message or a record: scheme, host and port.

    User info becomes ``***@``; a path, query or fragment becomes ``/…`` (webhook and API
    URLs carry tokens there). Never raises, whatever the input: a port over 65535, no scheme,
    a non-string, control characters (shown as ``?``).
    """
    try:
        text = url if isinstance(url, str) else str(url)
    except Exception:  # noqa: BLE001 - an object whose __str__ fails is still no reason to crash
        return "<url>"
    scheme, sep, rest = text.strip().partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        scheme, sep, rest = "", "", text.strip()
    # nothing before the last "@" is shown: a password may hold an unescaped "/", "?" or "#"
    _, at, rest = rest.rpartition("@")
    authority = _AUTHORITY.match(rest)
    host = authority.group(0) if authority else ""
    tail = rest[len(host) :]
    shown = (scheme.lower() + "://" if sep else "") + ("***@" if at else "")
    shown += _printable(host, 262)  # 253 for the name, and a port
    return shown + ("/…" if tail.strip("/") else "")


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            return int(raw.replace("_", ""))
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in {"1", "true", "yes", "on"}
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def markdown_table() -> str:
    """The README's configuration table, generated from the fields so the two never drift."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = f.default if f.default != "" else "(empty)"
        rows.append(f"| `{PREFIX}{f.name.upper()}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)


TABLE_START, TABLE_END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def update_readme(path: Path) -> bool:
    """Rewrite the table between the README's markers; True if it changed."""
    text = path.read_text()
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    new = f"{head}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{tail}"
    path.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--update-readme"]:
        readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        print("README table updated" if update_readme(readme) else "README table already current")
    else:
        print(markdown_table())
