"""The apply loop: receive -> verify/decode -> dedupe -> apply per change -> park failures -> ack.

Nothing is acked before each of its changes was applied, found duplicate or stale, or
safely parked on a dead-letter queue. Changes to different keys are applied in
parallel; changes to one key keep their order. Each change is applied and judged on
its own: one that fails is parked (with the signed envelope it came in and its index
there) while every other change of its envelope is applied exactly once. Between
batches, :class:`~bridge.apply.retry.RetryLoop` re-attempts parked transient failures
when they are due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TypeVar

from bridge.apply.retry import Failed, RetryLoop, RetryPolicy, failure_records, reattempt
from bridge.apply.target import BATCH_GET_KEYS, KeyId, TargetTable, Unsettled
from bridge.change import Change, Image, Outcome
from bridge.deadletter.records import FailureRecord, Kind, Parker, State
from bridge.envelope import Batch, TrustStore, decode, peek
from bridge.errors import (
    ApplyError,
    DecodeError,
    ItemTooLargeError,
    PermanentApplyError,
    RecoverableTransportError,
    SystemicError,
    TransientApplyError,
)
from bridge.observe import Health, metrics
from bridge.observe.pause import Pause
from bridge.transport import Delivery
from bridge.transport.reliable import Backoff, ReliableTransport

log = logging.getLogger(__name__)
T = TypeVar("T")
# One turn may apply a whole prefetch of large envelopes against a slow or throttled table: minutes.
LOOP_MAX_INTERVAL_S = 300.0


@dataclass
class ApplyStats:
    envelopes: int = 0
    duplicate_envelopes: int = 0
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    retries: int = 0  # in-place retries of transient errors
    dead_lettered: int = 0  # changes the first attempt could not apply
    quarantined: int = 0  # envelopes that failed verification or decoding
    retried: int = 0  # changes re-attempted from the dead-letter queue
    recovered: int = 0  # of those, applied (or found already there)
    parked: int = 0  # changes given up on: permanent errors, retries exhausted
    too_large: int = 0  # of the failures, items over DynamoDB's size limit with the bridge's attributes

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


OnApplied = Callable[[Change, Outcome], None]


class ChangeApplier:
    """Applies changes through the target, per key in order, keys in parallel.

    Transient errors are retried in place a few times with jittered backoff; whatever
    still fails is returned, one :class:`Failed` per change, for the caller to park.
    An unexpected exception from one change is that change's permanent failure: it
    never takes down the loop or the other changes.
    """

    def __init__(
        self,
        target: TargetTable,
        stats: ApplyStats,
        *,
        workers: int = 8,
        transient_retries: int = 4,
        backoff: Backoff = Backoff(initial_s=0.1, max_s=2.0),
        on_applied: OnApplied | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.target = target
        self.stats = stats
        self.transient_retries = transient_retries
        self.backoff = backoff
        self.on_applied = on_applied
        self.stop = stop or threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply")
        self._lock = threading.Lock()

    def apply(self, items: Sequence[tuple[Change, T]]) -> list[Failed[T]]:
        """Apply ``items``: first every change's writes (keys in parallel, each key's changes in
        order), then the tombstones of the puts that created items, read in batches *after* all
        those puts (docs/consistency.md: a put before its tombstone read), then their outcomes."""
        by_key: dict[str, list[tuple[Change, T]]] = {}
        for change, tag in items:
            by_key.setdefault(change.key_token, []).append((change, tag))
        failures: list[Failed[T]] = []
        unsettled: list[tuple[Unsettled, T]] = []
        for failed, waiting in self._pool.map(self._apply_key, by_key.values()):
            failures.extend(failed)
            unsettled.extend(waiting)
        if unsettled:
            failures.extend(self._settle(unsettled))
        return failures

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _apply_key(self, items: list[tuple[Change, T]]) -> tuple[list[Failed[T]], list[tuple[Unsettled, T]]]:
        failures: list[Failed[T]] = []
        unsettled: list[tuple[Unsettled, T]] = []
        for change, tag in items:
            result = self._attempt(change, tag, self._apply_one)
            if isinstance(result, Failed):
                failures.append(result)
            elif isinstance(result, Unsettled):
                unsettled.append((result, tag))
            else:
                self._done(change, result)
        return failures, unsettled

    def _settle(self, unsettled: list[tuple[Unsettled, T]]) -> list[Failed[T]]:
        """Read the tombstones of the unsettled puts, 100 keys a call (calls in parallel), and decide each."""
        chunks: dict[KeyId, int] = {}
        keys: list[list[Image]] = []
        for put, _ in unsettled:
            key_id = self.target.key_id(put.key)
            if key_id not in chunks:
                if not keys or len(keys[-1]) >= BATCH_GET_KEYS:
                    keys.append([])
                keys[-1].append(put.key)
                chunks[key_id] = len(keys) - 1
        reads = list(self._pool.map(self._read_chunk, keys))
        failures: list[Failed[T]] = []
        for put, tag in unsettled:
            read = reads[chunks[self.target.key_id(put.key)]]
            if isinstance(read, ApplyError):
                metrics.aws_error("target", read)
                failures.append(Failed(tag, put.change, read, self.transient_retries + 1))
                continue
            tomb = read.get(self.target.key_id(put.key))
            result = self._attempt(put.change, tag, lambda _c, p=put, t=tomb: self.target.settle(p, t))  # type: ignore[misc]
            if isinstance(result, Failed):
                failures.append(result)
            else:
                assert isinstance(result, Outcome)
                self._done(put.change, result)
        return failures

    def _read_chunk(self, keys: list[Image]) -> dict[KeyId, str] | ApplyError:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.target.read_tombstones(keys)
            except TransientApplyError as exc:
                if attempt <= self.transient_retries and not self.stop.is_set():
                    self.count("retries")
                    time.sleep(self.backoff.delay(attempt))
                    continue
                return exc
            except ApplyError as exc:
                return exc

    def _attempt(
        self, change: Change, tag: T, fn: Callable[[Change], Outcome | Unsettled]
    ) -> Outcome | Unsettled | Failed[T]:
        """``fn(change)``, transient errors retried in place with backoff; a failure as :class:`Failed`."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(change)
            except TransientApplyError as exc:
                metrics.aws_error("target", exc)
                if attempt <= self.transient_retries and not self.stop.is_set():
                    self.count("retries")
                    time.sleep(self.backoff.delay(attempt))
                    continue
                return Failed(tag, change, exc, attempt)
            except ApplyError as exc:
                metrics.aws_error("target", exc)
                return Failed(tag, change, exc, attempt)

    def _done(self, change: Change, outcome: Outcome) -> None:
        self.count(outcome_counter(outcome))
        metrics.change_applied(self.target.table, change.version.origin, change.version.ts_us, outcome)
        if self.on_applied is not None:
            self.on_applied(change, outcome)

    def _apply_one(self, change: Change) -> Outcome | Unsettled:
        try:
            return self.target.start(change)
        except (ApplyError, SystemicError):
            raise
        except Exception as exc:  # e.g. a B value that is not base64: this change's problem only
            log.warning("change could not be applied (%s: %s); parking it", type(exc).__name__, exc)
            raise PermanentApplyError(f"unexpected {type(exc).__name__}: {exc}") from exc


class Applier:
    """Receives, verifies, applies and acks; stops the line on a systemic error.

    A :class:`~bridge.errors.SystemicError` (target table gone, access denied, wrong key schema,
    no trusted key matching the stream) releases every message of the batch back to the queue
    unacked and pauses (see :class:`~bridge.observe.pause.Pause`): nothing is parked for it.
    """

    #: An envelope signed by a key not in trusted_keys is quarantined only once an envelope of
    #: this run verified and fewer than this many envelopes of that same unknown key came in a row
    #: since; otherwise the trusted keys match nothing of the stream (a key rotated on one side
    #: only): the line pauses. Counting one key id keeps corrupted headers (random ids) quarantined.
    unknown_key_run_limit = 20

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
        retry_policy: RetryPolicy | None = None,
        retry_queue: ReliableTransport | None = None,
        on_applied: OnApplied | None = None,
        stop: threading.Event | None = None,
        health: Health | None = None,
        max_paused: float | None = None,
        pause_scope: str = "apply",
    ) -> None:
        self.health = health or Health()
        self.health.register_loop("apply", max_interval_s=LOOP_MAX_INTERVAL_S)
        self._metrics = metrics.apply_mirror(target.table)
        self.received_bytes = 0
        self.source = source
        self.target = target
        self.trust = trust
        self.parker = parker
        self.batch_messages = batch_messages
        self.policy = retry_policy or RetryPolicy()
        self.stop = stop or threading.Event()
        self.stats = ApplyStats()
        self.changes = ChangeApplier(
            target,
            self.stats,
            workers=workers,
            transient_retries=transient_retries,
            backoff=retry_backoff,
            on_applied=on_applied,
            stop=self.stop,
        )
        self.retry: RetryLoop | None = None
        if retry_queue is None:
            retry_queue = RetryLoop.open_queue(parker, self.stop)
        if retry_queue is not None:
            self.retry = RetryLoop(
                retry_queue, parker, self.policy, self._reattempt, self.changes.count, stop=self.stop
            )
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent envelope ids
        self._seen_max = 10_000
        self.health = health or Health()
        self.pause = Pause(pause_scope, self.health, max_paused_s=max_paused)  # a pipeline's name in its logs
        self._verified_once = False
        self._unknown_run = 0  # envelopes in a row signed by _unknown_key_id, since the last that verified
        self._unknown_key_id = ""

    def run(self, until_idle: float | None = None) -> ApplyStats:
        """Apply until stopped, or until idle: nothing arrived for ``until_idle`` seconds and
        no dead-letter re-attempt is due within that time (later ones wait for the next run)."""
        last_activity = time.monotonic()
        self.health.register_loop("apply", max_interval_s=120)
        try:
            while not self.stop.is_set():
                self.health.beat("apply")
                self.sync_metrics()
                if self.pause.held:
                    # Paused is never idle: --until-idle must not report a stopped line as drained.
                    last_activity = time.monotonic()
                    wait = self.pause.seconds_until_probe()
                    if wait > 0:
                        self.pause.check_limit()
                        self.stop.wait(min(wait, 0.5))
                        continue
                try:
                    if self.pause.held:
                        self.target.check()
                    wait = 0.5
                    if self.retry is not None:
                        if self.retry.due():
                            self.retry.sweep()
                        wait = max(0.0, min(wait, self.retry.seconds_until_due()))
                    deliveries = self.source.receive(self.batch_messages, timeout=wait)
                    if deliveries:
                        self.process(deliveries)
                        last_activity = time.monotonic()
                    self.pause.release()
                except SystemicError as exc:
                    self.pause.hold(exc)
                    continue
                except RecoverableTransportError:
                    if self.stop.is_set():
                        break  # shutdown during a broker outage: nothing was received, nothing to ack
                    raise
                except ApplyError as exc:
                    if not self.pause.held:
                        raise
                    log.debug("probe: %s", exc)  # the cause may be going away; probe again
                    self.pause.hold(SystemicError(self.pause.reason or str(exc)))
                    continue
                if (
                    not deliveries
                    and until_idle is not None
                    and time.monotonic() - last_activity >= until_idle
                    and (self.retry is None or not self.retry.pending_within(until_idle))
                ):
                    break
        finally:
            self.changes.shutdown()
            self.sync_metrics()
        counted = ", ".join(f"{k} {v}" for k, v in self.stats.as_dict().items() if v)
        log.info("apply totals: %s", counted or "nothing received")
        return self.stats

    def sync_metrics(self) -> None:
        self._metrics.sync(
            {**self.stats.as_dict(), "echoes": self.target.echoes, "received_bytes": self.received_bytes}
        )

    def close(self) -> None:
        self.source.close()
        if self.retry is not None:
            self.retry.close()
        self.parker.close()

    def process(self, deliveries: list[Delivery]) -> None:
        try:
            self._process(deliveries)
        except SystemicError:
            # Nothing of this batch was acked or parked: all of it goes back for after the pause.
            for delivery in deliveries:
                self.source.release(delivery)
            raise

    def _process(self, deliveries: list[Delivery]) -> None:
        batches: list[tuple[Delivery, Batch | None]] = []
        records: list[FailureRecord] = []
        in_flight: set[str] = set()
        for delivery in deliveries:
            self.received_bytes += len(delivery.body)
            batch = self._decode(delivery, in_flight, records)
            if batch is not None:
                in_flight.add(batch.envelope_id)
            batches.append((delivery, batch))
        items = [
            (change, (n, index))
            for n, (_, batch) in enumerate(batches)
            if batch is not None
            for index, change in enumerate(batch.changes)
        ]
        failures = self.changes.apply(items)
        by_envelope: dict[int, list[tuple[int, ApplyError]]] = {}
        for failed in failures:
            n, index = failed.tag
            by_envelope.setdefault(n, []).append((index, failed.error))
        for n, failed_changes in by_envelope.items():
            delivery, batch = batches[n]
            assert batch is not None
            records.extend(failure_records(delivery.body, batch, failed_changes, self.policy))
        self.changes.count("dead_lettered", len(failures))
        self.changes.count("too_large", sum(isinstance(f.error, ItemTooLargeError) for f in failures))
        self.changes.count(
            "parked", sum(len(r.changes) for r in records if r.kind is Kind.CHANGES and r.state is State.PARKED)
        )
        # Counted here, not when decoding: a systemic failure before this point sends the whole
        # batch back, and nothing of it was quarantined.
        self.changes.count("quarantined", sum(1 for r in records if r.kind is Kind.ENVELOPE))
        if records:
            self.parker.park_all(records)
            if self.retry is not None:
                self.retry.note(records)
        for delivery, batch in batches:
            if batch is not None:
                self._remember(batch.envelope_id)
            self.source.ack(delivery)

    def _decode(self, delivery: Delivery, in_flight: set[str], records: list[FailureRecord]) -> Batch | None:
        try:
            batch = decode(delivery.body, self.trust)
        except DecodeError as exc:
            self._unknown_key(delivery.body)
            records.append(
                FailureRecord.from_exception(
                    Kind.ENVELOPE, State.QUARANTINED, exc, delivery.body, envelope_id=_printable(delivery.message_id)
                )
            )
            return None
        self._verified_once = True
        self._unknown_run = 0
        self.stats.envelopes += 1
        if batch.envelope_id in self._seen or batch.envelope_id in in_flight:
            self.stats.duplicate_envelopes += 1
            log.debug("envelope %s already applied; skipping its %d changes", batch.envelope_id, len(batch.changes))
            return None
        return batch

    def _unknown_key(self, body: bytes) -> None:
        """Raise SystemicError if the trusted keys seem to match nothing of this stream."""
        try:
            key_id = peek(body).key_id
        except DecodeError:
            return  # not an envelope at all: this message's problem
        if key_id in self.trust.key_ids:
            return  # a known key with a bad signature: this message's problem
        self._unknown_run = self._unknown_run + 1 if key_id == self._unknown_key_id else 1
        self._unknown_key_id = key_id
        if not self._verified_once or self._unknown_run >= self.unknown_key_run_limit:
            trusted = ", ".join(sorted(self.trust.key_ids)) or "none"
            raise SystemicError(
                f"envelopes are signed by key {key_id}, which trusted_keys does not hold (trusted: {trusted});"
                " no envelope verified since"
                + (" start" if not self._verified_once else f" {self._unknown_run} in a row")
            )

    def forget_envelopes(self) -> None:
        """Forget which envelopes were applied: for a caller whose event source will deliver some of
        them again and must see them applied (the serverless handler, between two batches)."""
        self._seen.clear()

    def _remember(self, envelope_id: str) -> None:
        self._seen[envelope_id] = None
        self._seen.move_to_end(envelope_id)
        while len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)

    def _reattempt(self, record: FailureRecord) -> list[FailureRecord]:
        result = reattempt(record, self.trust, self.changes.apply, self.policy)
        for name in ("retried", "recovered", "quarantined", "parked"):
            self.changes.count(name, getattr(result, "attempted" if name == "retried" else name))
        return result.records


def _printable(message_id: str | None) -> str | None:
    """A broker message id is unauthenticated input: keep it short and printable."""
    if message_id is None:
        return None
    return "".join(c if c.isprintable() else "?" for c in message_id[:128])


def outcome_counter(outcome: Outcome) -> str:
    return {Outcome.APPLIED: "applied", Outcome.DUPLICATE: "duplicates", Outcome.STALE: "stale"}[outcome]
