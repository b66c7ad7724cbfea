"""``pulse produce KIND …``: dispatch to the producer entry points (each has ``--help``)."""

from __future__ import annotations

import importlib
import sys

from pulse.settings import PREFIX, Settings

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
    if not {"-h", "--help"} & set(rest) and (missing := missing_config(kind, settings)):
        print(f"pulse produce {kind}: missing configuration: {', '.join(missing)} "
              "(see .env.example and docs/deploy.md)", file=sys.stderr)  # fmt: skip
        return 2
    module, func, _ = KINDS[kind]
    return int(getattr(importlib.import_module(module), func)(settings, rest))
