"""The apply loop: receive -> verify/decode -> dedupe -> apply per key -> park failures -> ack.

Nothing is acked before each of its changes was applied, found duplicate or stale, or
safely parked on the dead-letter queue. Changes to different keys are applied in
parallel; changes to one key keep their order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import orjson

from bridge.apply.target import Outcome, TargetTable
from bridge.change import Change
from bridge.deadletter import FailureRecord, Kind, Parker, State
from bridge.envelope import Batch, TrustStore, decode
from bridge.errors import ApplyError, DecodeError, PermanentApplyError, TransientApplyError
from bridge.transport import Delivery
from bridge.transport.reliable import Backoff, ReliableTransport

log = logging.getLogger(__name__)


@dataclass
class ApplyStats:
    envelopes: int = 0
    duplicate_envelopes: int = 0
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    retries: int = 0
    dead_lettered: int = 0
    quarantined: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


OnApplied = Callable[[Change, Outcome], None]


@dataclass(frozen=True)
class _Failed:
    change: Change
    batch: Batch
    error: ApplyError
    attempts: int


class Applier:
    def __init__(
        self,
        source: ReliableTransport,
        target: TargetTable,
        trust: TrustStore,
        parker: Parker,
        *,
        workers: int = 8,
        batch_messages: int = 16,
        transient_retries: int = 4,
        retry_backoff: Backoff = Backoff(initial_s=0.1, max_s=2.0),
        on_applied: OnApplied | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.trust = trust
        self.parker = parker
        self.batch_messages = batch_messages
        self.transient_retries = transient_retries
        self.retry_backoff = retry_backoff
        self.on_applied = on_applied
        self.stop = stop or threading.Event()
        self.stats = ApplyStats()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply")
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent envelope ids
        self._seen_max = 10_000
        self._lock = threading.Lock()

    def run(self, until_idle: float | None = None) -> ApplyStats:
        """Apply until stopped, or until nothing arrived for ``until_idle`` seconds."""
        last_activity = time.monotonic()
        try:
            while not self.stop.is_set():
                deliveries = self.source.receive(self.batch_messages, timeout=0.5)
                if deliveries:
                    self.process(deliveries)
                    last_activity = time.monotonic()
                elif until_idle is not None and time.monotonic() - last_activity >= until_idle:
                    break
        finally:
            self._pool.shutdown(wait=True)
        return self.stats

    def close(self) -> None:
        self.source.close()
        self.parker.close()

    def process(self, deliveries: list[Delivery]) -> None:
        batches: list[tuple[Delivery, Batch | None]] = []
        in_flight: set[str] = set()
        for delivery in deliveries:
            batch = self._decode(delivery, in_flight)
            if batch is not None:
                in_flight.add(batch.envelope_id)
            batches.append((delivery, batch))
        by_key: dict[str, list[tuple[Change, Batch]]] = {}
        for _, batch in batches:
            if batch is None:
                continue
            for change in batch.changes:
                by_key.setdefault(change.key_token, []).append((change, batch))
        failures: list[_Failed] = []
        for result in self._pool.map(self._apply_key, by_key.values()):
            failures.extend(result)
        for failed in failures:
            self._park_change(failed)
        for delivery, batch in batches:
            if batch is not None:
                self._remember(batch.envelope_id)
            self.source.ack(delivery)

    def _decode(self, delivery: Delivery, in_flight: set[str]) -> Batch | None:
        try:
            batch = decode(delivery.body, self.trust)
        except DecodeError as exc:
            self.stats.quarantined += 1
            self.parker.park(FailureRecord.from_exception(
                Kind.ENVELOPE, State.QUARANTINED, exc, delivery.body, envelope_id=delivery.message_id))
            return None
        self.stats.envelopes += 1
        if batch.envelope_id in self._seen or batch.envelope_id in in_flight:
            self.stats.duplicate_envelopes += 1
            log.debug("envelope %s already applied; skipping its %d changes", batch.envelope_id,
                      len(batch.changes))
            return None
        return batch

    def _remember(self, envelope_id: str) -> None:
        self._seen[envelope_id] = None
        self._seen.move_to_end(envelope_id)
        while len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)

    def _apply_key(self, items: list[tuple[Change, Batch]]) -> list[_Failed]:
        failures = []
        for change, batch in items:
            attempt = 0
            while True:
                attempt += 1
                try:
                    outcome = self.target.apply(change)
                except TransientApplyError as exc:
                    if attempt <= self.transient_retries and not self.stop.is_set():
                        self._count("retries")
                        time.sleep(self.retry_backoff.delay(attempt))
                        continue
                    failures.append(_Failed(change, batch, exc, attempt))
                except PermanentApplyError as exc:
                    failures.append(_Failed(change, batch, exc, attempt))
                else:
                    self._count(outcome_counter(outcome))
                    if self.on_applied is not None:
                        self.on_applied(change, outcome)
                break
        return failures

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _park_change(self, failed: _Failed) -> None:
        change, batch = failed.change, failed.batch
        state = State.RETRYING if isinstance(failed.error, TransientApplyError) else State.PARKED
        position = (change.position.shard_id, change.position.sequence_number) if change.position else None
        self.stats.dead_lettered += 1
        self.parker.park(FailureRecord.from_exception(
            Kind.CHANGE, state, failed.error, orjson.dumps(change.to_wire()), attempts=failed.attempts,
            origin=batch.origin, table=batch.table, position=position, envelope_id=batch.envelope_id,
        ))


def outcome_counter(outcome: Outcome) -> str:
    return {Outcome.APPLIED: "applied", Outcome.DUPLICATE: "duplicates", Outcome.STALE: "stale"}[outcome]
