"""Regenerate the envelope test vectors: ``python tests/vectors/make_vectors.py``.

Only rerun this on purpose (a format change means a new version byte, not new bytes for
version 1). The committed files are the contract other implementations test against.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import orjson
import zstandard

from bridge.change import Change
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.envelope.codec import _seal

OUT = Path(__file__).parent / "envelope"
# RFC 8032 section 7.1 TEST 1 and TEST 2 secret keys: public knowledge, test only.
SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
OTHER_SEED = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
CREATED_MS = 1_700_000_000_000


def put(pk: str, seq: int, **attrs: dict[str, Any]) -> dict[str, Any]:
    keys = {"pk": {"S": pk}}
    return {
        "op": "put",
        "keys": keys,
        "new": {**keys, **attrs},
        "v": [1_700_000_000_000_000 + seq, "us-east-1", str(seq)],
        "pos": ["shardId-00000001700000000000-abcdef01", f"4970000000000000000000{seq:04d}"],
    }


SIMPLE = [put("user#1", 1, name={"S": "Ada"}, visits={"N": "3"})]

SMALL: list[dict[str, Any]] = [
    put("user#1", 1, name={"S": "Ada"}, visits={"N": "3"}),
    put("user#2", 2, name={"S": "Grace"}, visits={"N": "12"}, active={"BOOL": True}),
    {
        "op": "delete",
        "keys": {"pk": {"S": "user#3"}},
        "v": [1_700_000_000_000_003, "us-east-1", "3"],
        "pos": ["shardId-00000001700000000000-abcdef01", "49700000000000000000000003"],
    },
]

# Composite key with a binary sort key; every attribute type; a delete; a TTL delete.
BIN_KEY = {"pk": {"S": "tenant#7"}, "sk": {"B": "AAEC/f7/"}}
ALL_TYPES: list[dict[str, Any]] = [
    {
        "op": "put",
        "keys": BIN_KEY,
        "new": {
            **BIN_KEY,
            "s": {"S": "héllo wörld ✓ 🚀"},
            "n": {"N": "-1.5E+10"},
            "b": {"B": "3q2+7w=="},
            "ss": {"SS": ["a", "b", "c"]},
            "ns": {"NS": ["1", "2.5", "-3"]},
            "bs": {"BS": ["AQ==", "Ag=="]},
            "m": {"M": {"inner": {"S": "x"}, "deep": {"M": {"n": {"N": "0"}}}}},
            "l": {"L": [{"S": "x"}, {"N": "1"}, {"NULL": True}, {"L": []}, {"M": {}}]},
            "nul": {"NULL": True},
            "t": {"BOOL": True},
            "f": {"BOOL": False},
        },
        "v": [1_700_000_000_000_010, "eu-west-1", "18446744073709551616"],
        "pos": ["shardId-00000001700000000000-abcdef01", "49700000000000000000000010"],
    },
    {
        "op": "delete",
        "keys": {"pk": {"S": "tenant#7"}, "sk": {"B": "AQID"}},
        "v": [1_700_000_000_000_011, "eu-west-1", "19"],
        "pos": ["shardId-00000001700000000000-abcdef01", "49700000000000000000000011"],
    },
    {
        "op": "delete",
        "keys": {"pk": {"S": "tenant#7"}, "sk": {"B": "BAUG"}},
        "v": [1_700_000_000_000_012, "eu-west-1", "20"],
        "svc": True,
    },
]


def batch_doc(envelope_id: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": envelope_id,
        "origin": "us-east-1",
        "table": "orders",
        "created_ms": CREATED_MS,
        "changes": changes,
    }


def to_batch(doc: dict[str, Any]) -> Batch:
    changes = tuple(Change.from_wire(c) for c in doc["changes"])
    return Batch(doc["id"], doc["origin"], doc["table"], doc["created_ms"], changes)


def valid_vector(name: str, description: str, doc: dict[str, Any], compression: Compression) -> None:
    signer = Signer.from_seed(bytes.fromhex(SEED))
    level = 3
    envelope = encode(to_batch(doc), signer, compression, level)
    vector: dict[str, Any] = {
        "description": description,
        "seed": SEED,
        "key_id": signer.key_id,
        "public_key": signer.public_pem().decode(),
        "compression": compression.value,
        "level": level,
        "batch": doc,
        "body": orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode(),
        "envelope": envelope.hex(),
    }
    # Compressed bytes are only reproducible with the same compressor library.
    if compression is Compression.ZSTD:
        vector["zstd_version"] = ".".join(map(str, zstandard.ZSTD_VERSION))
    if compression is Compression.ZLIB:
        vector["zlib_version"] = zlib.ZLIB_VERSION
    write(name, vector)


def invalid_vectors() -> None:
    signer = Signer.from_seed(bytes.fromhex(SEED))
    doc = batch_doc("bad-1", SIMPLE)
    good = encode(to_batch(doc), signer, Compression.NONE)
    body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    flipped = bytearray(good)
    flipped[40] ^= 0x01  # inside the body

    def signed_json(value: Any) -> bytes:
        return _seal(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), 0, signer)

    missing_op = {**doc, "changes": [{k: v for k, v in SIMPLE[0].items() if k != "op"}]}
    cases: list[tuple[Any, ...]] = [
        ("bad magic", b"DDBX" + good[4:], "DecodeError", "bad magic"),
        (
            "unknown version",
            _seal(body, 0, signer, version=9),
            "UnsupportedVersionError",
            "unknown envelope version 9; this build reads 1",
        ),
        ("unknown compression code", _seal(body, 7, signer), "DecodeError", "unknown compression code 7"),
        ("truncated body", good[:100], "DecodeError", "truncated: header says body is"),
        ("truncated signature", good[:-10], "DecodeError", "truncated: signature is 64 bytes, 54 present"),
        ("trailing bytes", good + b"\x00", "DecodeError", "1 unexpected bytes after the signature"),
        (
            "unknown key id",
            encode(to_batch(doc), Signer.from_seed(bytes.fromhex(OTHER_SEED)), Compression.NONE),
            "SignatureError",
            "unknown key id",
        ),
        ("bit flipped in body", bytes(flipped), "SignatureError", "signature does not verify"),
        ("signed body is not JSON", _seal(b"not json", 0, signer), "DecodeError", "body is not valid JSON"),
        (
            "signed body has an unknown field",
            signed_json({**doc, "extra": 1}),
            "DecodeError",
            "unknown ['extra']",
        ),
        ("signed change lacks op", signed_json(missing_op), "DecodeError", "change 0:"),
        (
            "signed zlib body is corrupt",
            _seal(b"\x78\x9c garbage", 1, signer),
            "DecodeError",
            "zlib body is corrupt",
        ),
        (
            "zstd body over max_body_bytes",
            _seal(zstandard.ZstdCompressor().compress(b" " * 2048), 2, signer),
            "DecodeError",
            "body decompresses to 2048 bytes, over the limit of 1024",
            1024,
        ),
    ]
    out = []
    for name, data, error, message, *limit in cases:
        case = {"name": name, "envelope": data.hex(), "error": error, "message": message}
        if limit:
            case["max_body_bytes"] = limit[0]
        out.append(case)
    write(
        "invalid.json",
        {
            "description": "Envelopes every decoder must reject; trust only the key from `seed`. "
            "`error` is the ddb-bridge exception class, `message` a substring of its message.",
            "seed": SEED,
            "key_id": signer.key_id,
            "cases": out,
        },
    )


def write(name: str, vector: dict[str, Any]) -> None:
    (OUT / name).write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    valid_vector(
        "none.json",
        "One put, no compression: the body is readable in the hex.",
        batch_doc("vec-none-1", SIMPLE),
        Compression.NONE,
    )
    valid_vector("zlib.json", "Two puts and a delete, zlib level 3.", batch_doc("vec-zlib-1", SMALL), Compression.ZLIB)
    valid_vector(
        "zstd.json",
        "Two puts and a delete, zstd level 3 with the content size in the frame.",
        batch_doc("vec-zstd-1", SMALL),
        Compression.ZSTD,
    )
    valid_vector(
        "all-types.json",
        "Composite key with a binary sort key, every attribute type (S N B SS NS BS M L NULL BOOL), "
        "non-ASCII text, a sequence number above 2**64, a delete and a TTL delete by the service "
        "(svc, no pos). No compression.",
        batch_doc("vec-all-types-1", ALL_TYPES),
        Compression.NONE,
    )
    valid_vector(
        "all-types-zstd.json",
        "The all-types batch, zstd level 3.",
        batch_doc("vec-all-types-2", ALL_TYPES),
        Compression.ZSTD,
    )
    invalid_vectors()


if __name__ == "__main__":
    main()
