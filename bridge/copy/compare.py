"""What "the same item" means when comparing tables, and a small all-in-memory comparison.

Bridge-owned attributes (``_bridge*``) are ignored. Values compare by meaning, not spelling:
sets are unordered, numbers compare as decimals (``1.50`` equals ``1.5``), maps and lists
compare element by element under the same rules. ``bridge verify`` (:mod:`bridge.copy.verify`)
uses :func:`item_digest` and :func:`key_bytes` to compare tables of any size;
:func:`compare_tables` loads both tables into memory and suits small tables and tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from bridge.change import AttributeValue, Image, from_boto_image

DEFAULT_PREFIX = "_bridge"


def scan(client: Any, table: str) -> Iterator[Image]:
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        yield from page.get("Items", [])


def _number(text: str) -> str:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    return "0" if value == 0 else str(value.normalize())


def canonical_value(value: AttributeValue) -> Any:
    """A JSON-able form in which equal values are equal (wire form: binary as base64 text)."""
    ((tag, inner),) = value.items()
    if tag == "N":
        return {"N": _number(inner)}
    if tag == "NS":
        return {"NS": sorted({_number(x) for x in inner})}
    if tag in ("SS", "BS"):
        return {tag: sorted(set(inner))}
    if tag == "M":
        return {"M": {k: canonical_value(v) for k, v in inner.items()}}
    if tag == "L":
        return {"L": [canonical_value(v) for v in inner]}
    return {tag: inner}


def user_image(image: Image, prefix: str = DEFAULT_PREFIX) -> Image:
    """The item as users see it: bridge-owned attributes removed."""
    return {k: v for k, v in image.items() if not k.startswith(prefix)}


def canonical_bytes(image: Image, prefix: str = DEFAULT_PREFIX) -> bytes:
    """Wire-form item -> bytes equal exactly when the items are equal to users."""
    canon = {k: canonical_value(v) for k, v in user_image(image, prefix).items()}
    return orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)


def item_digest(image: Image, prefix: str = DEFAULT_PREFIX) -> int:
    """128-bit digest of the item as users see it."""
    return int.from_bytes(hashlib.blake2b(canonical_bytes(image, prefix), digest_size=16).digest(), "big")


def key_bytes(image: Image, key_names: Sequence[str]) -> bytes:
    """The item's key in canonical form: equal keys give equal bytes on both tables."""
    return orjson.dumps({k: canonical_value(image[k]) for k in key_names}, option=orjson.OPT_SORT_KEYS)


@dataclass
class Difference:
    only_in_source: list[Image] = field(default_factory=list)
    only_in_target: list[Image] = field(default_factory=list)
    different: list[Image] = field(default_factory=list)  # keys whose items differ
    compared: int = 0

    @property
    def identical(self) -> bool:
        return not (self.only_in_source or self.only_in_target or self.different)

    @property
    def count(self) -> int:
        return len(self.only_in_source) + len(self.only_in_target) + len(self.different)


def compare_tables(
    source_client: Any,
    source_table: str,
    target_client: Any,
    target_table: str,
    key_names: tuple[str, ...],
    prefix: str = DEFAULT_PREFIX,
) -> Difference:
    """Both tables in memory, item by item (consistent scans). Keys are reported in wire form."""

    def load(client: Any, table: str) -> dict[bytes, tuple[Image, bytes]]:
        items = {}
        for raw in scan(client, table):
            item = from_boto_image(raw)
            items[key_bytes(item, key_names)] = ({k: item[k] for k in key_names}, canonical_bytes(item, prefix))
        return items

    src, dst = load(source_client, source_table), load(target_client, target_table)
    diff = Difference(compared=len(src.keys() | dst.keys()))
    for k in src.keys() - dst.keys():
        diff.only_in_source.append(src[k][0])
    for k in dst.keys() - src.keys():
        diff.only_in_target.append(dst[k][0])
    for k in src.keys() & dst.keys():
        if src[k][1] != dst[k][1]:
            diff.different.append(src[k][0])
    return diff
