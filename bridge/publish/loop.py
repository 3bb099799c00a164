"""The publish loop: stream -> changes -> batches -> signed envelopes -> transport -> checkpoint.

Checkpoints move only after the transport confirmed every envelope holding the changes
up to that point, so a crash anywhere re-sends (harmless: the applier dedupes) and never
skips. One loop thread keeps the stream's per-key order all the way to the transport.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson

from bridge.change import Change
from bridge.deadletter.records import FailureRecord, Kind, Parker, State
from bridge.envelope import Compression, Signer
from bridge.errors import RecordError, RecoverableTransportError, SystemicError
from bridge.observe import Health, metrics
from bridge.observe.pause import Pause
from bridge.publish.batching import BatchLimits, record_size
from bridge.publish.loopguard import LoopGuard
from bridge.publish.projection import Projection
from bridge.publish.sender import Sender
from bridge.source.records import parse_record
from bridge.source.streams import ShardRead
from bridge.transport.reliable import ReliableTransport

log = logging.getLogger(__name__)
# A turn may wait on a broker that is reconnecting (retried until stopped): readiness says so sooner.
LOOP_MAX_INTERVAL_S = 300.0


class RecordReader(Protocol):
    """Where records come from and where confirmed positions go: the daemon's
    :class:`~bridge.source.streams.StreamReader`, or the serverless handler's event."""

    def poll(self, limit: int = ...) -> list[ShardRead]: ...

    def confirm(self, shard_id: str, sequence_number: str | None, ended: bool = False) -> None: ...

    def rewind(self) -> None: ...


@dataclass
class PublishStats:
    records: int = 0
    changes: int = 0
    envelopes: int = 0
    wire_bytes: int = 0
    raw_stream_bytes: int = 0
    bad_records: int = 0
    oversize: int = 0
    ttl_deletes_ignored: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Pending:
    shard_id: str
    sequence_number: str
    change: Change | None  # None: a bad record already parked, only its position moves on
    size: int


@dataclass
class _Buffer:
    items: list[_Pending] = field(default_factory=list)
    size: int = 0
    changes: int = 0
    since: float = 0.0


class Publisher:
    def __init__(
        self,
        reader: RecordReader,
        transport: ReliableTransport,
        signer: Signer,
        parker: Parker,
        *,
        table: str,
        key_names: tuple[str, ...],
        origin: str,
        timestamp_attribute: str | None = None,
        compression: Compression = Compression.ZSTD,
        limits: BatchLimits = BatchLimits(),
        measure_raw: bool = False,
        stop: threading.Event | None = None,
        guard: LoopGuard | None = None,
        ttl_deletes: str = "replicate",
        health: Health | None = None,
        max_paused: float | None = None,
        projection: Projection | None = None,
        pause_scope: str = "publish",
    ) -> None:
        self.health = health or Health()
        self.health.register_loop("publish", max_interval_s=LOOP_MAX_INTERVAL_S)
        self._metrics = metrics.publish_mirror(table)
        self.reader = reader
        self.sender = Sender(
            transport, signer, parker, origin=origin, table=table, compression=compression, projection=projection
        )
        self.parker = parker
        self.table = table
        self.key_names = key_names
        self.origin = origin
        self.timestamp_attribute = timestamp_attribute
        self.limits = limits
        self.measure_raw = measure_raw
        self.stop = stop or threading.Event()
        self.guard = guard  # active-active: drops the bridge's own writes
        self.ttl_deletes = ttl_deletes
        self._read = PublishStats()  # the reading side's counters; stats adds the sender's
        self._buf = _Buffer()
        self._ended: set[str] = set()
        self.health = health or Health()
        self.pause = Pause(pause_scope, self.health, max_paused_s=max_paused)

    def run(self, until_idle: float | None = None) -> PublishStats:
        """Publish until stopped (then flush and checkpoint), or until idle for ``until_idle`` s."""
        last_activity = time.monotonic()
        self.health.register_loop("publish", max_interval_s=120)
        while not self.stop.is_set():
            self.health.beat("publish")
            self._metrics.sync(self.stats)
            if self.pause.held:
                last_activity = time.monotonic()  # paused is not idle
                wait = self.pause.seconds_until_probe()
                if wait > 0:
                    self.pause.check_limit()
                    self.stop.wait(min(wait, 0.5))
                    continue
            try:
                got = self._turn()
            except SystemicError as exc:
                self._stop_line(exc)
                continue
            except RecoverableTransportError:
                if self.stop.is_set():
                    break  # shutdown during a broker outage; the flush below says what stays unsent
                raise
            self.pause.release()
            if got:
                last_activity = time.monotonic()
            elif not self._buf.items and not self._ended:
                if until_idle is not None and time.monotonic() - last_activity >= until_idle:
                    break
                time.sleep(0.05)
        try:
            while not self.pause.held and (self._buf.items or self._ended):
                self.flush()
        except RecoverableTransportError as exc:
            if not self.stop.is_set():
                raise
            # Shutdown during a broker outage: what was not confirmed is not checkpointed either,
            # so the next start reads it again.
            log.warning("stopping with %d unsent change(s) not checkpointed: %s", self._buf.changes, exc)
        self._metrics.sync(self.stats)
        return self.stats

    def _turn(self) -> bool:
        """One poll, and the flushes it made due; True if the stream had anything."""
        reads = self.reader.poll(limit=1000)
        got = False
        for read in reads:
            got = got or bool(read.records) or read.ended
            self._take(read.shard_id, read.records)
            if read.ended:
                self._ended.add(read.shard_id)
        while self._due():
            self.flush()
        return got

    def publish_records(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        """Publish ``records`` (one shard, in order) now, confirming each flushed prefix to the reader.

        The serverless handler's whole turn: the event source delivered the records, and what the
        reader was told is confirmed is all that may be skipped on a retry. On any error what was
        read and not confirmed is forgotten (the event source sends it again), and so is the loop
        guard's memory of it.
        """
        try:
            self._take(shard_id, records)
            while self._buf.items:
                self.flush()
        except BaseException:
            self._buf = _Buffer()
            if self.guard is not None:
                self.guard.store.rollback()
            raise
        finally:
            self._metrics.sync(self.stats)

    def _stop_line(self, exc: SystemicError) -> None:
        """Forget what was read and not confirmed, as a restart would: after the pause the reader
        starts again from the checkpoints, so nothing read before the failure is skipped (what was
        sent and not yet checkpointed is sent again; the applier dedupes it)."""
        self._buf = _Buffer()
        self._ended.clear()
        self.reader.rewind()
        self.pause.hold(exc)

    @property
    def stats(self) -> PublishStats:
        sent = self.sender.stats
        return PublishStats(
            self._read.records,
            sent.changes,
            sent.envelopes,
            sent.wire_bytes,
            self._read.raw_stream_bytes,
            self._read.bad_records,
            sent.oversize,
            self._read.ttl_deletes_ignored,
        )

    def close(self) -> None:
        self.sender.close()

    def _take(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._read.records += 1
            self._read.raw_stream_bytes += raw_size(record, self.measure_raw)
            seq = str(record.get("dynamodb", {}).get("SequenceNumber", "")) if isinstance(record, dict) else ""
            try:
                change: Change | None = parse_record(
                    record,
                    key_names=self.key_names,
                    origin=self.origin,
                    timestamp_attribute=self.timestamp_attribute,
                    shard_id=shard_id,
                )
            except RecordError as exc:
                self._park_record(exc, record, shard_id, seq)
                change = None
            if change is not None and change.by_service and self.ttl_deletes == "ignore":
                self._read.ttl_deletes_ignored += 1
                change = None
            if change is not None and self.guard is not None:
                change = self.guard.admit(record, change)
            size = record_size(record, change)
            if not self._buf.items:
                self._buf.since = time.monotonic()
            self._buf.items.append(_Pending(shard_id, seq, change, size))
            self._buf.size += size
            self._buf.changes += change is not None

    def _park_record(self, exc: RecordError, record: Any, shard_id: str, seq: str) -> None:
        self._read.bad_records += 1
        self.parker.park(
            FailureRecord.from_exception(
                Kind.RECORD,
                State.PARKED,
                exc,
                orjson.dumps(record, default=str),
                origin=self.origin,
                table=self.table,
                position=(shard_id, seq) if seq else None,
            )
        )

    def _due(self) -> bool:
        buf = self._buf
        if self.limits.full(buf.changes, buf.size):
            return True
        if buf.items and time.monotonic() - buf.since >= self.limits.max_wait_s:
            return True
        return bool(self._ended) and not buf.items

    def flush(self) -> None:
        """Publish a prefix of the buffer (within the limits), then checkpoint it."""
        take, size, changes = self.limits.prefix((p.size, p.change is not None) for p in self._buf.items)
        prefix, rest = self._buf.items[:take], self._buf.items[take:]
        self.sender.send([p.change for p in prefix if p.change is not None])
        self._buf = _Buffer(rest, self._buf.size - size, self._buf.changes - changes, time.monotonic())
        last: dict[str, str] = {}
        for item in prefix:
            last[item.shard_id] = item.sequence_number
        still_pending = {item.shard_id for item in rest}
        for shard_id, seq in last.items():
            ended = shard_id in self._ended and shard_id not in still_pending
            self.reader.confirm(shard_id, seq, ended=ended)
            if ended:
                self._ended.discard(shard_id)
        for shard_id in list(self._ended - still_pending):
            self.reader.confirm(shard_id, None, ended=True)
            self._ended.discard(shard_id)
        if self.guard is not None:
            self.guard.commit()


def raw_size(record: Any, measure: bool) -> int:
    """A record's size as the stream holds it: its ``SizeBytes`` (free), or its JSON when ``measure``d.

    ``measure`` (the demo, the bench) compares the wire with the stream's JSON, which costs a dump per record.
    """
    if measure:
        return len(orjson.dumps(record, default=str))
    size = record.get("dynamodb", {}).get("SizeBytes") if isinstance(record, dict) else None
    return size if isinstance(size, int) else 0
