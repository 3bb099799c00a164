"""The publish function: a DynamoDB Streams event -> the daemon's :class:`~bridge.publish.Publisher`.

The publisher is built once per container by :func:`bridge.wiring.build_publisher`, with the event
as its reader: :meth:`Publisher.publish_records` parses, filters (TTL deletes, the active-active loop
guard), batches, compresses, signs and sends, parking what can never be sent, and confirms each
flushed prefix to :class:`EventReader`. The response then names the first record not confirmed, so
the mapping retries from there and never skips one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from bridge.config import PublishConfig
from bridge.errors import BridgeError, ConfigError, SystemicError
from bridge.observe import metrics
from bridge.publish import Publisher
from bridge.serverless import events
from bridge.serverless.secrets import load_signer
from bridge.source.streams import ShardRead
from bridge.state.guard_memory import DynamoDBStore
from bridge.wiring import aws_side, build_publisher

log = logging.getLogger(__name__)


class EventReader:
    """The reader of one event's records: keeps what the publisher confirmed, reads nothing itself."""

    def __init__(self) -> None:
        self.confirmed: str | None = None

    def poll(self, limit: int = 0) -> list[ShardRead]:
        return []

    def confirm(self, shard_id: str, sequence_number: str | None, ended: bool = False) -> None:
        if sequence_number:
            self.confirmed = sequence_number

    def rewind(self) -> None:
        self.confirmed = None


class PublishFunction:
    def __init__(self, cfg: PublishConfig, stop: threading.Event) -> None:
        self.cfg = cfg
        self.reader = EventReader()
        self.guard_store: DynamoDBStore | None = None
        if cfg.active_active:
            if not cfg.checkpoint.startswith("dynamodb://"):
                raise ConfigError(
                    "checkpoint: active-active in Lambda keeps the loop guard's memory in DynamoDB;"
                    " set it to dynamodb://TABLE"
                )
            client = aws_side(cfg, "source").client("dynamodb")
            table = cfg.checkpoint.removeprefix("dynamodb://")
            self.guard_store = DynamoDBStore(client, table, scope=f"{cfg.origin_id}|{cfg.source_table}")
        self.publisher: Publisher = build_publisher(
            cfg, stop, signer=load_signer(cfg.signing_key), reader=self.reader, guard_store=self.guard_store
        )
        # A container's disk goes with it: a record the parked queue refuses fails the batch instead.
        self.publisher.parker.local_fallback = False

    def handle(self, event: Any) -> dict[str, Any]:
        records = events.records(event)
        if not records:
            return events.response([])
        self.reader.rewind()
        if self.guard_store is not None:
            self.guard_store.begin()
        shard = events.stream_label(records[0])
        metrics.stream_read(str(records[0].get("eventSourceARN", self.cfg.source_table)), shard, records)
        try:
            self.publisher.publish_records(shard, records)
        except (SystemicError, ConfigError):
            raise  # the whole batch again, later: nothing is parked for a failure every record meets
        except BridgeError as exc:
            first = first_unconfirmed(records, self.reader.confirmed)
            if first is None:
                raise  # no sequence number to name: the mapping retries the whole batch
            log.warning("publish failed at sequence number %s (%s); the mapping retries from there", first, exc)
            return events.response([first])
        return events.response([])


def first_unconfirmed(records: list[dict[str, Any]], confirmed: str | None) -> str | None:
    """The sequence number the mapping must resume at: the record after the last confirmed one."""
    seqs = [events.sequence_number(r) for r in records]
    start = len(seqs) - seqs[::-1].index(confirmed) if confirmed is not None and confirmed in seqs else 0
    return seqs[start] if start < len(seqs) else None
