"""Comparing two tables item by item, ignoring bridge-owned attributes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.change import Image, from_boto_image


def scan(client: Any, table: str) -> Iterator[Image]:
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        yield from page.get("Items", [])


def _canonical(image: Image) -> Any:
    """Sets compare unordered; everything else compares as it is."""
    out = {}
    for name, value in image.items():
        ((tag, inner),) = value.items()
        if tag in ("SS", "NS", "BS"):
            inner = sorted(inner, key=float) if tag == "NS" else sorted(inner)
        elif tag == "N":
            inner = repr(float(inner)) if "." in inner or "e" in inner.lower() else str(int(inner))
        elif tag in ("M", "L"):
            inner = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        out[name] = {tag: inner}
    return out


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


def compare_tables(source_client: Any, source_table: str, target_client: Any, target_table: str,
                   key_names: tuple[str, ...], prefix: str = "_bridge") -> Difference:
    def load(client: Any, table: str) -> dict[bytes, Image]:
        items = {}
        for raw in scan(client, table):
            item = {k: v for k, v in from_boto_image(raw).items() if not k.startswith(prefix)}
            key = {k: item[k] for k in key_names}
            items[orjson.dumps(key, option=orjson.OPT_SORT_KEYS)] = item
        return items

    src, dst = load(source_client, source_table), load(target_client, target_table)
    diff = Difference(compared=len(src.keys() | dst.keys()))
    for k in src.keys() - dst.keys():
        diff.only_in_source.append(orjson.loads(k))
    for k in dst.keys() - src.keys():
        diff.only_in_target.append(orjson.loads(k))
    for k in src.keys() & dst.keys():
        if _canonical(src[k]) != _canonical(dst[k]):
            diff.different.append(orjson.loads(k))
    return diff
