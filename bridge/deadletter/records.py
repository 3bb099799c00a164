"""Failure records: what could not be published or applied, kept whole with the reason.

A :class:`FailureRecord` travels to a dead-letter destination, which is itself any
transport URL. There are two, side by side (``docs/dead-letters.md``):

* the **retry queue** (``dead_letter``, default ``<queue>.dlq``): records in state
  ``retrying``, which ``bridge-apply`` re-attempts when due;
* the **parked queue** beside it (``<queue>.dlq.parked``): records in state ``parked`` or
  ``quarantined``, which wait for an operator (``bridge dlq``). Nothing consumes it
  automatically, so it costs nothing however many records it holds.

If a destination refuses a record (too large for the broker, broker gone while shutting
down), it is written to a local quarantine directory instead, so nothing is ever
silently dropped.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import BridgeError, DecodeError, TransportError
from bridge.transport import Opener, OutgoingMessage, Transport, TransportURL, content_id
from bridge.transport.reliable import ReliableTransport

log = logging.getLogger(__name__)

FORMAT = "ddb-bridge-failure/1"
LOCAL_SUFFIX = ".failure.json"  # a record in the quarantine directory (``bridge dlq`` reads them too)
# Ids are uuid4 hex from us; a forged record may say anything, but not something huge.
_MAX_ID = 128


class Kind(str, enum.Enum):
    ENVELOPE = "envelope"  # payload: the envelope bytes exactly as received
    CHANGES = "changes"  # payload: the signed envelope as received; `changes`: which of its changes failed
    CHANGE = "change"  # payload: one change in wire JSON, unsigned (the publisher's oversize changes)
    RECORD = "record"  # payload: a stream record the publisher could not parse


class State(str, enum.Enum):
    RETRYING = "retrying"  # transient failure: re-attempted automatically when due
    PARKED = "parked"  # permanent failure or retries exhausted: waits for an operator
    QUARANTINED = "quarantined"  # signature / decode failures: never retried automatically


TERMINAL = frozenset({State.PARKED, State.QUARANTINED})


@dataclass(frozen=True)
class FailureRecord:
    kind: Kind
    state: State
    error: str  # exception class name
    message: str
    payload: bytes
    attempts: int = 1
    first_failed_at: float = field(default_factory=time.time)
    last_failed_at: float = field(default_factory=time.time)
    origin: str | None = None
    table: str | None = None
    position: tuple[str, str] | None = None
    envelope_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Kind.CHANGES: indices into the envelope's changes that this record is about.
    changes: tuple[int, ...] = ()
    #: State.RETRYING: epoch seconds of the next attempt (backoff and jitter already in).
    retry_at: float | None = None
    #: When a retry pass last put this record back: tells a pass it has gone full circle.
    checked_at: float | None = None

    @classmethod
    def from_exception(
        cls, kind: Kind, state: State, exc: BaseException, payload: bytes, **context: Any
    ) -> FailureRecord:
        return cls(kind, state, type(exc).__name__, str(exc), payload, **context)

    def again(self, exc: BaseException, state: State, **changes: Any) -> FailureRecord:
        """The same failure after one more attempt that failed with ``exc``."""
        return replace(
            self,
            state=state,
            error=type(exc).__name__,
            message=str(exc),
            attempts=self.attempts + 1,
            last_failed_at=time.time(),
            **changes,
        )

    def with_(self, **changes: Any) -> FailureRecord:
        return replace(self, **changes)

    @property
    def age(self) -> float:
        """Seconds since the first failure."""
        return time.time() - self.first_failed_at

    def encode(self) -> bytes:
        doc = asdict(self)
        doc["format"] = FORMAT
        doc["payload"] = base64.b64encode(self.payload).decode("ascii")
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, data: bytes) -> FailureRecord:
        """Parse and check a record; a dead-letter queue is input like any other."""
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
            if doc.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} record")
            unknown = doc.keys() - _FIELDS
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            return cls(**_checked(doc))
        except (ValueError, TypeError, KeyError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise DecodeError(f"not a failure record: {exc}", bytes(data)) from exc

    def summary(self) -> str:
        """One log line: no payload, no item contents."""
        where = f" at {self.position[0]}:{self.position[1]}" if self.position else ""
        what = (
            f"{len(self.changes)} change(s) of envelope {self.envelope_id}"
            if self.kind is Kind.CHANGES
            else self.kind.value
        )
        return f"{what} {self.state.value} after {self.attempts} attempt(s){where}: {self.error}: {self.message}"

    def describe(self) -> dict[str, Any]:
        """Everything but the payload itself, JSON-ready (``bridge dlq list --json``)."""
        doc = asdict(self)
        del doc["payload"]
        doc["payload_bytes"] = len(self.payload)
        doc["kind"], doc["state"] = self.kind.value, self.state.value
        doc["changes"] = list(self.changes)
        doc["position"] = list(self.position) if self.position else None
        return doc


_FIELDS = frozenset(FailureRecord.__dataclass_fields__)


def _checked(doc: dict[str, Any]) -> dict[str, Any]:
    """Type-check every field, so a forged record fails here and not deep in the retry loop."""
    out: dict[str, Any] = {}
    out["kind"] = Kind(doc["kind"])
    out["state"] = State(doc["state"])
    for name in ("error", "message"):
        out[name] = _typed(doc, name, str)
    payload = _typed(doc, "payload", str)
    out["payload"] = base64.b64decode(payload, validate=True)
    attempts = _typed(doc, "attempts", int)
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    out["attempts"] = attempts
    for name in ("first_failed_at", "last_failed_at"):
        out[name] = _time(doc.get(name), name, required=True)
    for name in ("retry_at", "checked_at"):
        if doc.get(name) is not None:
            out[name] = _time(doc[name], name)
    for name in ("origin", "table", "envelope_id"):
        if doc.get(name) is not None:
            out[name] = _typed(doc, name, str)
    position = doc.get("position")
    if position is not None:
        if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
            raise ValueError("position must be [shard_id, sequence_number]")
        out["position"] = (position[0], position[1])
    record_id = _typed(doc, "id", str)
    if not 0 < len(record_id) <= _MAX_ID:
        raise ValueError(f"id must be 1-{_MAX_ID} characters")
    out["id"] = record_id
    changes = doc.get("changes", [])
    if not (isinstance(changes, list) and all(type(i) is int and i >= 0 for i in changes)):
        raise ValueError("changes must be a list of indices >= 0")
    out["changes"] = tuple(changes)
    return out


def _typed(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc[name]
    if type(value) is not kind:
        raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _time(value: Any, name: str, required: bool = False) -> float:
    if value is None and required:
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be epoch seconds, got {value!r:.40}")
    return float(value)


def wrap_foreign(body: bytes, reason: str) -> FailureRecord:
    """A message on a dead-letter queue that is not a failure record, kept whole as one.

    It may be a raw envelope (a broker-side dead-letter exchange puts those there): as a
    quarantined envelope it can still be replayed, and only if its signature verifies.
    """
    # Named by content, so every listing shows the same id for the same message.
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return FailureRecord(Kind.ENVELOPE, State.QUARANTINED, "DecodeError", reason, body, id=f"foreign-{digest}")


class Parker:
    """Puts failure records somewhere safe: retrying ones on the retry queue, parked and
    quarantined ones on the parked queue beside it, else the local quarantine directory."""

    #: False where the local disk is not safe (a Lambda container's dies with it): a record the
    #: queue refused then raises :class:`TransportError`, so the caller keeps the original.
    local_fallback = True

    def __init__(
        self,
        dlq: ReliableTransport | None,
        quarantine_dir: Path,
        parked: ReliableTransport | None = None,
        *,
        opener: Opener | None = None,
    ) -> None:
        self.dlq = dlq
        self.quarantine_dir = quarantine_dir
        self._parked = parked
        self.opener = opener  # opens the parked queue (and the retry loop's consumer) beside dlq
        self.parked = 0  # records published to either queue
        self.quarantined_locally = 0

    @property
    def parked_queue(self) -> ReliableTransport | None:
        """The parked queue, opened on first use beside the retry queue."""
        if self._parked is None and self.dlq is not None:
            url = self.dlq.transport.sibling("parked")
            self._parked = ReliableTransport(self.open(url, "dlq"), self.dlq.backoff, self.dlq.stop)
        return self._parked

    def open(self, url: TransportURL, role: str) -> Transport:
        """A transport beside the retry queue, opened the way the plugin set opens them."""
        if self.opener is None:
            raise BridgeError(f"no opener given to the parker: cannot open {url.redacted()}")
        return self.opener(url, role)

    def close(self) -> None:
        if self.dlq is not None:
            self.dlq.close()
        if self._parked is not None:
            self._parked.close()

    def destination(self, record: FailureRecord) -> ReliableTransport | None:
        return self.parked_queue if record.state in TERMINAL else self.dlq

    def park(self, record: FailureRecord) -> None:
        self.park_all([record])

    def park_all(self, records: Sequence[FailureRecord]) -> None:
        """Publish records (one confirmed batch per queue); any refused go to the local directory."""
        for record in records:
            level = logging.WARNING if record.state is State.RETRYING else logging.ERROR
            log.log(level, "dead-lettered %s", record.summary())
        for queue, group in self.group(records):
            limit = queue.max_message_bytes if queue is not None else 0
            bodies = [(r, r.encode()) for r in group]
            fit = [r for r, body in bodies if len(body) <= limit]
            for record, body in bodies:
                if len(body) > limit:
                    log.error(
                        "failure record %s is %d bytes, over the dead-letter queue's limit of %d",
                        record.id,
                        len(body),
                        limit,
                    )
                    self._write_local(record.id, body)
            if not fit:
                continue
            try:
                self.put(queue, fit, [body for _, body in bodies if len(body) <= limit])
            except BridgeError as exc:
                log.error("dead-letter queue refused %d record(s) (%s); writing them locally", len(fit), exc)
                for record in fit:
                    self._write_local(record.id, record.encode())

    def put(
        self, queue: ReliableTransport | None, records: Sequence[FailureRecord], bodies: Sequence[bytes] | None = None
    ) -> None:
        """Publish or raise: for callers that still hold the original and can retry later."""
        if queue is None:
            raise BridgeError("no dead-letter queue configured")
        bodies = bodies if bodies is not None else [r.encode() for r in records]
        # Too big for the queue: ReliableTransport.publish refuses the batch before sending.
        # A record put back keeps its id but not its body (attempts, checked_at): the message id
        # must change with it, or a deduplicating broker (SQS FIFO) would silently drop it.
        queue.publish([OutgoingMessage(b, content_id(r.id, b), r.id) for r, b in zip(records, bodies, strict=True)])
        self.parked += len(records)

    def group(self, records: Iterable[FailureRecord]) -> list[tuple[ReliableTransport | None, list[FailureRecord]]]:
        """Records by the queue they belong on."""
        groups: dict[int, tuple[ReliableTransport | None, list[FailureRecord]]] = {}
        for record in records:
            try:
                queue = self.destination(record)
            except BridgeError as exc:
                log.error("cannot open the parked queue (%s); records for it are kept locally", exc)
                queue = None
            groups.setdefault(id(queue), (queue, []))[1].append(record)
        return list(groups.values())

    def _write_local(self, name: str, body: bytes) -> None:
        if not self.local_fallback:
            raise TransportError(
                f"the dead-letter queue refused failure record {name}, and there is no safe local disk"
            )
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self.quarantine_dir / f"{name}{LOCAL_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.quarantined_locally += 1
        log.error("failure record kept in %s", path)
