"""Random byte mutations of JSON input, for the parsers' differential fuzz tests."""

from __future__ import annotations

import random

JSON_BYTES = b'{}[]":,0123456789eE.-+ \\ntrufalsxZT\x00\x7f\xc3\xa9\xff\xed'


def mutate_bytes(rng: random.Random, raw: bytes, alphabet: bytes = JSON_BYTES) -> bytes:
    """``raw`` with one to three bytes replaced, inserted or deleted."""
    out = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(out))
        op = rng.randrange(3)
        if op == 0:
            out[at] = rng.choice(alphabet)
        elif op == 1:
            out.insert(at, rng.choice(alphabet))
        else:
            del out[at]
    return bytes(out)
