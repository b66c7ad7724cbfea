"""stocktwits-pulse: real-time market-attention signals from the Stocktwits stream, on Kafka.

One import root. The shared ground floor lives here (settings, the local stack, Kafka
clients, health and metrics, process lifecycle); the design-card folders ``producers/``,
``processors/`` and ``schemas/`` sit at the top of the repository and are installed as
``pulse.producers``, ``pulse.processors`` and ``pulse.schemas``; ``pulse.consumers`` reads the
output topics; ``pulse.cli`` (the ``pulse`` command and the demo) is the top floor, and
nothing imports it.
"""
