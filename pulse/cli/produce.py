"""``pulse produce KIND``: the producers, one subcommand per kind, each with its options.

Every handler checks the configuration the kind cannot start without (:data:`REQUIRED`)
before any connection, then calls the producer's own ``run…(settings, …)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pulse.cli.common import Handler, Subcommands, command, metrics_port
from pulse.settings import PREFIX, Settings

# kind -> settings it cannot start without (each names a PULSE_* variable); checked before any
# connection, so a deployment without them says what is missing at once instead of a 401 loop
REQUIRED: dict[str, tuple[str, ...]] = {
    "firehose": ("firehose_username", "firehose_password"),
    "sentiment": ("firehose_username", "firehose_password"),
    "chart": ("firehose_username", "firehose_password"),  # the chart API takes the same login
    "trending": ("trending_api_key",),
}


def missing_config(kind: str, settings: Settings) -> list[str]:
    """The ``PULSE_*`` variables producer ``kind`` needs and ``settings`` leaves empty."""
    return [PREFIX + name.upper() for name in REQUIRED.get(kind, ()) if not getattr(settings, name)]


def register(sub: Subcommands) -> None:
    produce = sub.add_parser(
        "produce",
        help="run a producer: firehose, sentiment, trending, chart, rest, replay, synthetic",
        description="Run one producer: an upstream source (or captured files, or a "
        "generator) into the raw Kafka topics. `pulse produce KIND --help` for its options.",
    )
    kinds = produce.add_subparsers(dest="kind", required=True, metavar="KIND")
    _firehose(kinds, "firehose", "stream", "Firehose /stream → messages, likes, social")
    _firehose(kinds, "sentiment", "sentiment", "Firehose /sentiment → sentiment")
    _trending(kinds)
    _chart(kinds)
    _rest(kinds)
    _replay(kinds)
    _synthetic(kinds)


def _checked(kind: str, handler: Handler) -> Handler:
    """``handler``, after saying which required variables are missing (exit 2) if any are."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        if missing := missing_config(kind, settings):
            print(f"pulse produce {kind}: missing configuration: {', '.join(missing)} "
                  "(see .env.example and docs/deploy.md)", file=sys.stderr)  # fmt: skip
            return 2
        return handler(settings, args)

    return run


def _firehose(kinds: Subcommands, kind: str, path: str, summary: str) -> None:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from pulse.producers.firehose import SENTIMENT, STREAM, run_stream

        return run_stream(
            settings, STREAM if path == "stream" else SENTIMENT, from_seq_id=args.from_seq_id,
            no_resume=args.no_resume, max_events=args.max_events,
            checkpoint_interval_s=args.checkpoint_interval, metrics_port=args.metrics_port,
        )  # fmt: skip

    p = command(
        kinds, kind, _checked(kind, run), summary=summary,
        description=f"Stream Firehose /{path} into Kafka, resuming from the checkpoint in "
        "Kafka. Credentials: PULSE_FIREHOSE_USERNAME / PULSE_FIREHOSE_PASSWORD.",
    )  # fmt: skip
    p.add_argument("--from-seq-id", help="resume after this seq_id instead of the checkpoint")
    p.add_argument("--no-resume", action="store_true", help="ignore the checkpoint: live edge")
    p.add_argument("--max-events", type=int, help="stop after this many events (demos, tests)")
    p.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between checkpoint writes (default 1)",
    )
    metrics_port(p)


def _poller_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one round, then exit")
    metrics_port(p)


def _trending(kinds: Subcommands) -> None:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from pulse.producers.pollers import run_trending

        return run_trending(settings, asset_class=args.asset_class, region=args.region,
                            limit=args.limit, interval_s=args.interval, once=args.once,
                            metrics_port=args.metrics_port)  # fmt: skip

    p = command(
        kinds, "trending", _checked("trending", run),
        summary="poll trending symbols → trending",
        description="Poll the trending-symbols API (X-API-Key from PULSE_TRENDING_API_KEY) "
        "into stocktwits.trending.",
    )  # fmt: skip
    p.add_argument(
        "--class",
        dest="asset_class",
        default="all",
        choices=["all", "equity", "crypto"],
        help="asset class (default all)",
    )
    p.add_argument("--region", choices=["US", "CA", "X"], help="market region (default: any)")
    p.add_argument("--limit", type=int, default=30, help="rows per page, at most 30")
    p.add_argument("--interval", type=float, help="seconds, default PULSE_TRENDING_INTERVAL_S")
    _poller_options(p)


def _chart(kinds: Subcommands) -> None:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from pulse.producers.pollers import run_chart

        return run_chart(settings, symbols=args.symbols, zoom=args.zoom,
                         interval_s=args.interval, once=args.once,
                         metrics_port=args.metrics_port)  # fmt: skip

    p = command(
        kinds, "chart", _checked("chart", run),
        summary="poll sentiment chart v2 → sentiment-chart",
        description="Poll the sentiment-chart v2 API (basic auth: PULSE_FIREHOSE_USERNAME / "
        "PULSE_FIREHOSE_PASSWORD); only points newer than those already in Kafka are written.",
    )  # fmt: skip
    p.add_argument("--symbols", help="comma-separated; default PULSE_CHART_SYMBOLS")
    p.add_argument(
        "--zoom",
        choices=["1D", "1W", "1M", "3M", "6M", "1Y", "ALL"],
        help="chart range (default PULSE_CHART_ZOOM)",
    )
    p.add_argument("--interval", type=float, default=300.0, help="seconds (default 300)")
    _poller_options(p)


def _rest(kinds: Subcommands) -> None:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from pulse.producers.pollers import run_rest

        return run_rest(settings, streams=args.streams, min_interval_s=args.min_interval,
                        dedup_window_s=args.dedup_window, once=args.once,
                        metrics_port=args.metrics_port)  # fmt: skip

    p = command(
        kinds, "rest", _checked("rest", run), summary="poll REST v2 streams → messages",
        description="Poll REST API v2 streams into stocktwits.messages, the same records as "
        "the Firehose; ids already on the topic are skipped. Optional bearer token: "
        "PULSE_REST_TOKEN.",
    )  # fmt: skip
    p.add_argument("--streams", help="e.g. trending,all,symbol:AAPL; default PULSE_REST_STREAMS")
    p.add_argument(
        "--min-interval",
        type=float,
        metavar="S",
        help="least seconds between requests (default 18, 9 with a token: the "
        "hourly limits of 200 / 400 requests)",
    )
    p.add_argument(
        "--dedup-window",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds of the messages topic read back at start for ids already "
        "written (default 3600)",
    )
    _poller_options(p)


def existing_file(text: str) -> Path:
    """A FILE argument: a file that exists (said in one usage line otherwise)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _replay(kinds: Subcommands) -> None:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from pulse.producers.replay import run

        return run(settings, args.files, speed=args.speed, progress=not args.no_progress,
                   metrics_port=args.metrics_port)  # fmt: skip

    p = command(
        kinds, "replay", _checked("replay", run),
        summary="replay captured files (JSONL, REST JSON, CSV)",
        description="Replay Firehose JSONL captures, REST API JSON responses and history CSV "
        "files (optionally .gz) into Kafka, in event-time order, duplicates removed.",
    )  # fmt: skip
    p.add_argument(
        "files",
        nargs="+",
        type=existing_file,
        metavar="FILE",
        help="captured files; the format is recognised by content",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="×N real time, keeping the gaps between events; 0 = as fast as possible",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    metrics_port(p)


def _synthetic(kinds: Subcommands) -> None:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from pulse.producers.synthetic import Burst, Config, run

        config = Config(symbols=args.symbols, rate_per_s=args.rate, seed=args.seed,
                        bursts=tuple(Burst.parse(b) for b in args.burst))  # fmt: skip
        return run(settings, config, count=args.count, speed=args.speed, start=args.start,
                   jsonl=args.jsonl, metrics_port=args.metrics_port)  # fmt: skip

    p = command(
        kinds, "synthetic", _checked("synthetic", run),
        summary="generate a synthetic message stream",
        description="Generate Stocktwits-like messages (Zipf popularity, daily rhythm, bursts, "
        "labelled sentiment, multi-symbol messages) into stocktwits.messages, origin synthetic.",
    )  # fmt: skip
    p.add_argument("--count", type=int, help="stop after this many messages (default: forever)")
    p.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="messages/s of stream time, daily average (default 20)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="stream time ×N wall time; 0 = as fast as possible (default 1)",
    )
    p.add_argument("--symbols", type=int, default=500, help="how many symbols (default 500)")
    p.add_argument(
        "--burst",
        action="append",
        default=[],
        metavar="SYM@START+DURxMULT",
        help="e.g. GME@600+300x20: GME from 600 s for 300 s at ×20 (repeatable)",
    )
    p.add_argument("--start", help="stream start, ISO-8601 UTC (default: now)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--jsonl", metavar="FILE", help="write Firehose JSON lines here, not Kafka")
    metrics_port(p)
