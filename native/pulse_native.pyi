MAX_PAYLOAD_BYTES: int

def firehose_message(raw: bytes, header: bytes) -> tuple[int, str | None, bytes] | None:
    """A Firehose Message create → (message id, seq_id, header + Avro MessageEvent), or None
    (defer to the Python path) for anything else."""

class MessageReader:
    """Reads the fan-out's fields of framed Avro MessageEvents written with one schema."""

    def __init__(self, schema_json: str) -> None: ...
    def read(
        self, frame: bytes
    ) -> tuple[bool, int, int, tuple[int, int, str | None, list[str]] | None]: ...
