"""One JSON encoder for every payload; decoders live beside their event families."""

import msgspec

encoder = msgspec.json.Encoder()


def encode(obj: object) -> bytes:
    return encoder.encode(obj)
