"""Avro contracts (`*.avsc`) and the one place that names topics and schema subjects."""
