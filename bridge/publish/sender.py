"""Changes -> signed envelopes that fit the transport -> confirmed publish.

Shared by the stream publisher, the bootstrap copy and ``verify --repair``: every path
that ships changes encodes, splits and parks them the same way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from bridge.change import Change
from bridge.deadletter.records import FailureRecord, Kind, Parker, State
from bridge.envelope import Batch, Compression, Signer, encode
from bridge.errors import MessageTooLargeError
from bridge.publish.projection import Projection
from bridge.transport import OutgoingMessage
from bridge.transport.reliable import ReliableTransport


@dataclass
class SendStats:
    changes: int = 0
    envelopes: int = 0
    wire_bytes: int = 0
    oversize: int = 0


class Sender:
    def __init__(
        self,
        transport: ReliableTransport,
        signer: Signer,
        parker: Parker,
        *,
        origin: str,
        table: str,
        compression: Compression = Compression.ZSTD,
        projection: Projection | None = None,
    ) -> None:
        self.transport = transport
        self.projection = projection  # applied before signing: excluded attributes never leave
        self.signer = signer
        self.parker = parker
        self.origin = origin
        self.table = table
        self.compression = compression
        self.stats = SendStats()

    def send(self, changes: Sequence[Change]) -> None:
        """Publish ``changes`` in order; returns once the broker confirmed all of them."""
        if not changes:
            return
        if self.projection is not None:
            changes = [self.projection.change(c) for c in changes]
        messages: list[OutgoingMessage] = []
        sent = self._encode_fitting(list(changes), messages)
        if messages:
            self.transport.publish(messages)
            self.stats.envelopes += len(messages)
            self.stats.changes += sent
            self.stats.wire_bytes += sum(len(m.body) for m in messages)

    def _encode_fitting(self, changes: list[Change], out: list[OutgoingMessage]) -> int:
        """Encode; an envelope over the transport's limit is split in halves, in order."""
        envelope_id = envelope_id_for(self.origin, self.table, changes)
        batch = Batch(envelope_id, self.origin, self.table, int(time.time() * 1000), tuple(changes))
        body = encode(batch, self.signer, self.compression)
        if len(body) <= self.transport.max_message_bytes:
            out.append(OutgoingMessage(body, envelope_id, f"{self.origin}/{self.table}"))
            return len(changes)
        if len(changes) == 1:
            self._park_oversize(changes[0], len(body))
            return 0
        mid = len(changes) // 2
        return self._encode_fitting(changes[:mid], out) + self._encode_fitting(changes[mid:], out)

    def _park_oversize(self, change: Change, size: int) -> None:
        self.stats.oversize += 1
        exc = MessageTooLargeError(
            f"one change encodes to {size} bytes; the transport takes at most {self.transport.max_message_bytes}"
        )
        pos = change.position
        self.parker.park(
            FailureRecord.from_exception(
                Kind.CHANGE,
                State.PARKED,
                exc,
                orjson.dumps(change.to_wire()),
                origin=self.origin,
                table=self.table,
                position=(pos.shard_id, pos.sequence_number) if pos else None,
            )
        )

    def close(self) -> None:
        self.transport.close()
        self.parker.close()


def envelope_id_for(origin: str, table: str, changes: Sequence[Change]) -> str:
    """Deterministic: the same changes re-sent after a crash get the same id (dedupe)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{origin}\0{table}".encode())
    for c in changes:
        pos = c.position
        # Without a stream position (scans, repairs) many changes share a version: the key tells them apart.
        h.update(
            f"\0{pos.shard_id}:{pos.sequence_number}".encode()
            if pos
            else f"\0{c.version.encode()}|{c.key_token}".encode()
        )
    return h.hexdigest()
