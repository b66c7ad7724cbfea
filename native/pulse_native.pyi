MAX_PAYLOAD_BYTES: int

def firehose_message(raw: bytes, header: bytes) -> tuple[int, str | None, bytes] | None:
    """A Firehose Message create → (message id, seq_id, header + Avro MessageEvent), or None
    (defer to the Python path) for anything else."""
