"""``pulse produce KIND …``: dispatch to the producer entry points (each has ``--help``)."""

from __future__ import annotations

import importlib
import sys

from settings import Settings

# kind -> (module, function, summary); every function is `main(settings, argv) -> int`
KINDS: dict[str, tuple[str, str, str]] = {
    "firehose": ("producers.firehose", "main", "Firehose /stream → messages, likes, social"),
    "sentiment": ("producers.firehose", "sentiment_main", "Firehose /sentiment → sentiment"),
    "trending": ("producers.pollers", "trending_main", "poll trending symbols → trending"),
    "chart": ("producers.pollers", "chart_main", "poll sentiment chart v2 → sentiment-chart"),
    "rest": ("producers.pollers", "rest_main", "poll REST v2 streams → messages"),
    "replay": ("producers.replay", "main", "replay captured files (JSONL, REST JSON, CSV)"),
    "synthetic": ("producers.synthetic", "main", "generate a synthetic message stream"),
}


def usage() -> str:
    lines = ["usage: pulse produce KIND [options]   (pulse produce KIND --help)", "", "kinds:"]
    lines += [f"  {kind:<10} {text}" for kind, (_, _, text) in KINDS.items()]
    return "\n".join(lines)


def main(settings: Settings, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    if kind not in KINDS:
        print(f"pulse produce: unknown kind {kind!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = KINDS[kind]
    return int(getattr(importlib.import_module(module), func)(settings, rest))
