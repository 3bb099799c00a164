"""How many changes go into one envelope: the one batching rule of the publish loop and the copy path.

A batch closes at ``max_changes`` changes or ``max_bytes`` raw change bytes (as the changes travel:
JSON, binary as base64). The sender still checks each encoded envelope against the transport's limit
and splits it when it does not fit; these limits only keep envelopes near a useful size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.change import Change

# Room for a change's own fields (key names, version, operation) around its images.
_OVERHEAD = 64


@dataclass(frozen=True)
class BatchLimits:
    max_changes: int = 500
    max_bytes: int = 1024 * 1024
    max_wait_s: float = 0.1

    def full(self, changes: int, size: int) -> bool:
        return changes >= self.max_changes or size >= self.max_bytes

    def prefix(self, items: Iterable[tuple[int, bool]]) -> tuple[int, int, int]:
        """How many leading ``(size, is_change)`` items fit one batch: ``(items, bytes, changes)``.

        The first item always fits (an oversize one is the sender's to split or park).
        """
        take = size = changes = 0
        for item_size, is_change in items:
            if take and (changes >= self.max_changes or size + item_size > self.max_bytes):
                break
            take += 1
            size += item_size
            changes += is_change
        return take, size, changes


def change_size(change: Change) -> int:
    return len(orjson.dumps(change.to_wire()))


def record_size(record: Any, change: Change | None) -> int:
    """A stream record's size as a change, cheaply: the stream's own ``SizeBytes`` when it has one."""
    if change is None:
        return 0
    size = record.get("dynamodb", {}).get("SizeBytes") if isinstance(record, dict) else None
    if isinstance(size, int):
        # binary travels as base64 text: assume the worst case of 4/3
        return size * 4 // 3 + _OVERHEAD
    return change_size(change)


def chunks(changes: Sequence[Change], limits: BatchLimits) -> Iterator[list[Change]]:
    """Consecutive batches of ``changes`` within ``limits``, in order."""
    sizes = [(change_size(c), True) for c in changes]
    start = 0
    while start < len(changes):
        take, _, _ = limits.prefix(sizes[start:])
        yield list(changes[start : start + take])
        start += take
