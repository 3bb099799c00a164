"""Batch <-> envelope bytes. The byte layout is specified in ``docs/envelope.md``.

Decoding authenticates before it interprets: the signature is checked over the exact
received bytes before any of them reach zlib, zstd or the JSON parser, so a forged or
corrupted message can only ever produce a :class:`~bridge.errors.DecodeError`.
"""

from __future__ import annotations

import enum
import re
import threading
import zlib
from dataclasses import dataclass

import orjson
import zstandard

from bridge.change import Change
from bridge.envelope.keys import Buffer, Signer, TrustStore
from bridge.errors import DecodeError, RouteRefusedError, SignatureError, UnsupportedVersionError

MAGIC = b"DDBR"
FORMAT_VERSION = 1
SIGNATURE_SIZE = 64
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_ENVELOPE_ID_LENGTH = 128
_MAX_BODY_LENGTH = 0xFFFFFFFF  # the length field is a uint32

_ENVELOPE_ID = re.compile(r"[A-Za-z0-9_\-:.]{1,128}")
_BODY_FIELDS = frozenset({"id", "origin", "table", "created_ms", "changes"})
_CHANGE_FIELDS = frozenset({"op", "keys", "v", "new", "pos", "svc"})
# Feeding a content-size-less zstd frame in small slices bounds how far one call can
# overshoot the cap: a 4-byte RLE block expands to at most 128 KiB, so 512 input bytes
# yield at most 16 MiB.
_ZSTD_STREAM_SLICE = 512


class Compression(str, enum.Enum):
    NONE = "none"
    ZLIB = "zlib"
    ZSTD = "zstd"


_CODE_OF = {Compression.NONE: 0, Compression.ZLIB: 1, Compression.ZSTD: 2}
_COMPRESSION_OF = {code: c for c, code in _CODE_OF.items()}


@dataclass(frozen=True)
class Batch:
    """The unit the publisher signs and sends: changes read from one table."""

    envelope_id: str
    origin: str
    table: str
    created_ms: int
    changes: tuple[Change, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.envelope_id, str) or not _ENVELOPE_ID.fullmatch(self.envelope_id):
            raise ValueError(
                f"envelope id {self.envelope_id!r:.160} must be 1-{MAX_ENVELOPE_ID_LENGTH} characters "
                "of [A-Za-z0-9_-:.] (it doubles as the SQS deduplication id)"
            )
        for name in ("origin", "table"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        ms = self.created_ms
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms < 2**63:
            raise ValueError(f"created_ms must be epoch milliseconds (an int >= 0), got {ms!r}")
        if not isinstance(self.changes, tuple):  # accept a list; the field stays immutable
            object.__setattr__(self, "changes", tuple(self.changes))
        for i, change in enumerate(self.changes):
            if not isinstance(change, Change):
                raise ValueError(f"changes[{i}] is a {type(change).__name__}, not a Change")


@dataclass(frozen=True)
class Header:
    """The unauthenticated envelope header, as :func:`peek` reads it."""

    version: int
    compression: Compression
    key_id: str
    body_length: int  # compressed size, as on the wire
    header_length: int  # offset of the body

    @property
    def signed_length(self) -> int:
        """Bytes covered by the signature (header and body); the signature follows."""
        return self.header_length + self.body_length


# ---------------------------------------------------------------------------- encode

_local = threading.local()  # zstd (de)compressor objects are not thread-safe


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        # Content size in the frame lets the decoder check the cap before allocating;
        # no checksum because the signature already covers every byte.
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
        cache[level] = compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _compress(body: bytes, compression: Compression, level: int) -> bytes:
    if compression is Compression.NONE:
        return body
    if compression is Compression.ZLIB:
        if not 0 <= level <= 9:
            raise ValueError(f"zlib level must be 0-9, got {level}")
        return zlib.compress(body, level)
    if not -(1 << 17) <= level <= zstandard.MAX_COMPRESSION_LEVEL:
        raise ValueError(f"zstd level must be at most {zstandard.MAX_COMPRESSION_LEVEL}, got {level}")
    return _compressor(level).compress(body)


def _seal(body: bytes, code: int, signer: Signer, version: int = FORMAT_VERSION) -> bytes:
    """Frame an already-compressed body and sign it (tests use it to forge odd envelopes)."""
    key_id = signer.key_id.encode("ascii")
    signed = b"".join((MAGIC, bytes((version, code, len(key_id))), key_id, len(body).to_bytes(4, "big"), body))
    return signed + signer.sign(signed)


def encode(batch: Batch, signer: Signer, compression: Compression = Compression.ZSTD, level: int = 3) -> bytes:
    """Serialise, compress and sign ``batch``. Raises ``ValueError`` if it cannot be."""
    compression = Compression(compression)
    doc = {
        "id": batch.envelope_id,
        "origin": batch.origin,
        "table": batch.table,
        "created_ms": batch.created_ms,
        "changes": [change.to_wire() for change in batch.changes],
    }
    try:
        body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"batch {batch.envelope_id} cannot be serialised: {exc}") from exc
    packed = _compress(body, compression, level)
    if len(packed) > _MAX_BODY_LENGTH:
        raise ValueError(f"compressed body is {len(packed)} bytes; an envelope holds at most 4 GiB")
    return _seal(packed, _CODE_OF[compression], signer)


# ---------------------------------------------------------------------------- decode


def peek(data: Buffer) -> Header:
    """Parse and sanity-check the header without verifying anything (for inspection).

    Checks magic, version, compression code, key id and that the length adds up; the
    result is *not* authentic until :func:`decode` has verified the signature.
    """
    raw = _as_bytes(data)
    n = len(raw)
    if raw[:4] != MAGIC[:n]:
        raise DecodeError(f"bad magic: expected {MAGIC.hex()} ({MAGIC.decode()}), got {raw[:4].hex()}", raw)
    # The version comes first: a future version may lay out everything after it differently.
    if n > 4 and raw[4] != FORMAT_VERSION:
        raise UnsupportedVersionError(f"unknown envelope version {raw[4]}; this build reads {FORMAT_VERSION}", raw)
    if n < 7:
        raise DecodeError(f"truncated: {n} bytes is too short for an envelope header", raw)
    version, code, key_len = raw[4], raw[5], raw[6]
    compression = _COMPRESSION_OF.get(code)
    if compression is None:
        raise DecodeError(f"unknown compression code {code}; known: 0 none, 1 zlib, 2 zstd", raw)
    if key_len == 0:
        raise DecodeError("empty key id", raw)
    header_length = 7 + key_len + 4
    if n < header_length:
        raise DecodeError(f"truncated: header needs {header_length} bytes, {n} present", raw)
    key_bytes = raw[7 : 7 + key_len]
    if not all(0x21 <= b <= 0x7E for b in key_bytes):
        raise DecodeError(f"key id is not printable ASCII: {key_bytes.hex()}", raw)
    body_length = int.from_bytes(raw[7 + key_len : header_length], "big")
    present = n - header_length
    if present < body_length:
        raise DecodeError(f"truncated: header says body is {body_length} bytes, {present} present", raw)
    tail = present - body_length
    if tail < SIGNATURE_SIZE:
        raise DecodeError(f"truncated: signature is {SIGNATURE_SIZE} bytes, {tail} present", raw)
    if tail > SIGNATURE_SIZE:
        raise DecodeError(f"{tail - SIGNATURE_SIZE} unexpected bytes after the signature", raw)
    return Header(version, compression, key_bytes.decode("ascii"), body_length, header_length)


def decode(data: Buffer, trust: TrustStore, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Batch:
    """Verify and parse an envelope. Every failure is a :class:`DecodeError` keeping ``raw``."""
    if max_body_bytes < 0:
        raise ValueError(f"max_body_bytes must be >= 0, got {max_body_bytes}")
    raw = _as_bytes(data)
    header = peek(raw)
    view = memoryview(raw)
    end = header.signed_length
    try:
        trust.verify(header.key_id, view[:end], view[end:])
    except SignatureError as exc:
        raise SignatureError(str(exc), raw) from None  # same error, now carrying the raw bytes
    body = _decompress(view[header.header_length : end], header.compression, max_body_bytes, raw)
    batch = _parse_body(body, raw)
    try:
        trust.authorize(header.key_id, batch.table, batch.origin)
    except RouteRefusedError as exc:
        raise RouteRefusedError(str(exc), raw) from None
    return batch


def _as_bytes(data: Buffer) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"an envelope is bytes, not {type(data).__name__}")


def _too_big(size: int | str, limit: int, raw: bytes) -> DecodeError:
    return DecodeError(f"body decompresses to {size} bytes, over the limit of {limit}", raw)


def _decompress(body: memoryview, compression: Compression, limit: int, raw: bytes) -> bytes | memoryview:
    if compression is Compression.NONE:
        if len(body) > limit:
            raise _too_big(len(body), limit, raw)
        return body
    if compression is Compression.ZLIB:
        return _inflate(body, limit, raw)
    return _unzstd(body, limit, raw)


def _inflate(body: memoryview, limit: int, raw: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)  # max_length stops a zip bomb mid-stream
    except zlib.error as exc:
        raise DecodeError(f"zlib body is corrupt: {exc}", raw) from exc
    if len(out) > limit:
        raise _too_big(f"more than {limit}", limit, raw)
    if not inflater.eof:
        raise DecodeError("zlib body is incomplete (stream does not end)", raw)
    if inflater.unused_data:
        raise DecodeError(f"{len(inflater.unused_data)} bytes after the end of the zlib stream", raw)
    return out


def _unzstd(body: memoryview, limit: int, raw: bytes) -> bytes:
    try:
        size = zstandard.frame_content_size(body)
        if size > limit:
            raise _too_big(size, limit, raw)
        if size >= 0:
            # One-shot: allocates exactly the declared size, which we just bounded.
            return _decompressor().decompress(body, allow_extra_data=False)
        return _unzstd_stream(body, limit, raw)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"zstd body is corrupt: {exc}", raw) from exc


def _unzstd_stream(body: memoryview, limit: int, raw: bytes) -> bytes:
    """Frames without a content size (other encoders): stream with a running cap."""
    stream = _decompressor().decompressobj()
    out: list[bytes] = []
    total = 0
    for start in range(0, len(body), _ZSTD_STREAM_SLICE):
        chunk = stream.decompress(body[start : start + _ZSTD_STREAM_SLICE])
        total += len(chunk)
        if total > limit:
            raise _too_big(f"more than {limit}", limit, raw)
        out.append(chunk)
        if stream.eof:
            if stream.unused_data or start + _ZSTD_STREAM_SLICE < len(body):
                raise DecodeError("unexpected bytes after the zstd frame", raw)
            return b"".join(out)
    raise DecodeError("zstd body is incomplete (frame does not end)", raw)


def _parse_body(body: bytes | memoryview, raw: bytes) -> Batch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}", raw) from exc
    if not isinstance(doc, dict):
        raise DecodeError(f"body must be a JSON object, got {type(doc).__name__}", raw)
    if doc.keys() != _BODY_FIELDS:
        missing, unknown = sorted(_BODY_FIELDS - doc.keys()), sorted(doc.keys() - _BODY_FIELDS)
        raise DecodeError(f"body fields wrong: missing {missing}, unknown {unknown}", raw)
    wires = doc["changes"]
    if not isinstance(wires, list):
        raise DecodeError(f"body.changes must be a list, got {type(wires).__name__}", raw)
    # The loop is inline (no helper call per change): decode's cost is per change.
    from_wire, known = Change.from_wire, _CHANGE_FIELDS
    changes = []
    for index, wire in enumerate(wires):
        # A v1 reader refuses fields it does not know rather than guess what they mean.
        if isinstance(wire, dict) and not known.issuperset(wire):
            raise DecodeError(f"change {index}: unknown field(s) {sorted(wire.keys() - known)}", raw)
        try:
            changes.append(from_wire(wire))
        except Exception as exc:  # from_wire is not hardened (IndexError, RecursionError...)
            raise DecodeError(f"change {index}: {exc}", raw) from exc
    try:
        return Batch(doc["id"], doc["origin"], doc["table"], doc["created_ms"], tuple(changes))
    except ValueError as exc:
        raise DecodeError(f"body: {exc}", raw) from exc
