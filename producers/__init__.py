"""Producers: Stocktwits data from outside → Avro records on the raw topics (docs/producers.md).

Pure: ``parse`` (upstream JSON → records), ``sse`` (framing), ``backoff``, ``resume``,
``synthetic`` (generation). I/O: ``firehose`` (SSE client), ``pollers`` (HTTP APIs),
``replay`` (files), ``publish`` (Kafka), ``metrics`` (/metrics, /healthz). Entry points:
``cli.KINDS`` (``pulse produce KIND``).
"""
