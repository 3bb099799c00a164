"""Envelopes: a signed, compressed, versioned container for a batch of changes.

Layout and verification rules are specified in ``docs/envelope.md``; test vectors live
in ``tests/vectors/envelope/``.

May import: ``bridge.change``, ``bridge.errors``. Both sides use it; it knows neither.
"""

from bridge.envelope.codec import (
    DEFAULT_MAX_BODY_BYTES,
    FORMAT_VERSION,
    MAGIC,
    SIGNATURE_SIZE,
    Batch,
    Compression,
    Header,
    decode,
    encode,
    peek,
)
from bridge.envelope.keys import KEY_FILE, PUB_FILE, Signer, TrustStore, key_id_of, keygen
from bridge.envelope.scope import Scope

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "FORMAT_VERSION",
    "KEY_FILE",
    "MAGIC",
    "PUB_FILE",
    "SIGNATURE_SIZE",
    "Batch",
    "Compression",
    "Header",
    "Scope",
    "Signer",
    "TrustStore",
    "decode",
    "encode",
    "key_id_of",
    "keygen",
    "peek",
]
