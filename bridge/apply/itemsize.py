"""An item's size as DynamoDB counts it, so a put that cannot fit is refused before it is sent.

DynamoDB's limit is 400 KB (409,600 bytes) per item, the bridge's own attributes included, so an
item within that distance of the limit at the source cannot be written at the target: without this
check it fails with a ValidationException that looks like any other and is parked again on every
replay. Rules (DynamoDB developer guide, "Item sizes"): attribute names and strings count their UTF-8
bytes, binary its bytes, a number 1 byte per two significant digits plus 1, booleans and nulls 1,
lists and maps 3 bytes plus 1 per element plus their contents, sets their elements.
"""

from __future__ import annotations

from typing import Any

ITEM_LIMIT_BYTES = 400 * 1024
WRITE_TOKEN_CHARS = 16


def item_size(item: dict[str, Any]) -> int:
    """Size of a boto-form item (``{"name": {"S": "..."}}``, binary as bytes)."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def value_size(value: dict[str, Any]) -> int:
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(inner.encode())
    if tag == "B":
        return len(inner)
    if tag == "N":
        return _number_size(inner)
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(s.encode()) for s in inner)
    if tag == "BS":
        return sum(len(b) for b in inner)
    if tag == "NS":
        return sum(_number_size(n) for n in inner)
    if tag == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if tag == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB type {tag!r}")


def _number_size(text: str) -> int:
    digits = text.lstrip("-").lower().split("e")[0].replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def bridge_overhead(prefix: str, origin: str) -> int:
    """Bytes the bridge adds to every item it writes: ``<prefix>_v`` (the version, 62 characters plus the
    origin's) and ``<prefix>_w`` (the write token)."""
    return len(f"{prefix}_v") + 62 + len(origin.encode()) + len(f"{prefix}_w") + WRITE_TOKEN_CHARS
