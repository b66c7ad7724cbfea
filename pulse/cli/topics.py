"""``pulse topics`` and ``pulse roundtrip``: the pipeline's topics and contracts."""

from __future__ import annotations

import argparse

from pulse.cli.common import Subcommands, command
from pulse.settings import Settings


def register(sub: Subcommands) -> None:
    topics = command(
        sub, "topics", _topics, summary="create every pipeline topic (idempotent)",
        description="Create every pipeline topic with its configured partitions (existing "
        "ones are left as they are).",
    )  # fmt: skip
    topics.add_argument("--register", action="store_true", help="also register every schema")
    roundtrip = command(
        sub, "roundtrip", _roundtrip,
        summary="parse captured Stocktwits files, send them through Kafka, decode",
        description="Parse captured Stocktwits files, produce them Avro-encoded, read them "
        "back and decode them: the contracts checked end to end against the cluster.",
    )  # fmt: skip
    roundtrip.add_argument(
        "files", nargs="+", metavar="FILE", help="REST API JSON responses or Firehose JSONL"
    )


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.schemas.admin import ensure_topics
    from pulse.schemas.serde import Serde
    from pulse.schemas.topics import ALL

    created = ensure_topics(settings)
    print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
    if args.register:
        serde = Serde(settings)
        for spec in ALL:
            print(f"{spec.value_subject(settings)}: schema id {serde.register(spec)}")
    return 0


def _roundtrip(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.producers.roundtrip import run

    return run(settings, args.files)
