"""Failure records: what could not be published or applied, kept whole with the reason.

A :class:`FailureRecord` travels to the dead-letter destination (any transport URL,
default ``<queue>.dlq`` beside the main one). If even that refuses it (too large for
the broker, broker gone while shutting down), it is written to a local quarantine
directory instead, so nothing is ever silently dropped.
"""

from __future__ import annotations

import base64
import enum
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import BridgeError, DecodeError
from bridge.transport import OutgoingMessage
from bridge.transport.reliable import ReliableTransport

log = logging.getLogger(__name__)

FORMAT = "ddb-bridge-failure/1"


class Kind(str, enum.Enum):
    ENVELOPE = "envelope"  # payload: the envelope bytes exactly as received
    CHANGE = "change"  # payload: one change in wire JSON (Change.to_wire)
    RECORD = "record"  # payload: a stream record the publisher could not parse


class State(str, enum.Enum):
    RETRYING = "retrying"
    PARKED = "parked"
    QUARANTINED = "quarantined"  # signature / decode failures: never retried automatically


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

    @classmethod
    def from_exception(cls, kind: Kind, state: State, exc: BaseException, payload: bytes,
                       **context: Any) -> FailureRecord:
        return cls(kind, state, type(exc).__name__, str(exc), payload, **context)

    def again(self, exc: BaseException, state: State) -> FailureRecord:
        return replace(self, state=state, error=type(exc).__name__, message=str(exc),
                       attempts=self.attempts + 1, last_failed_at=time.time())

    def encode(self) -> bytes:
        doc = asdict(self)
        doc["format"] = FORMAT
        doc["payload"] = base64.b64encode(self.payload).decode("ascii")
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, data: bytes) -> FailureRecord:
        try:
            doc = orjson.loads(data)
            if doc.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} record")
            doc["kind"] = Kind(doc["kind"])
            doc["state"] = State(doc["state"])
            doc["payload"] = base64.b64decode(doc["payload"], validate=True)
            if doc.get("position") is not None:
                doc["position"] = tuple(doc["position"])
            return cls(**doc)
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
            raise DecodeError(f"not a failure record: {exc}", data) from exc

    def summary(self) -> str:
        """One log line: no payload, no item contents."""
        where = f" at {self.position[0]}:{self.position[1]}" if self.position else ""
        return (f"{self.kind.value} {self.state.value} after {self.attempts} attempt(s){where}:"
                f" {self.error}: {self.message}")


class Parker:
    """Puts failure records somewhere safe: the DLQ, else the quarantine directory."""

    def __init__(self, dlq: ReliableTransport | None, quarantine_dir: Path) -> None:
        self.dlq = dlq
        self.quarantine_dir = quarantine_dir
        self.parked = 0
        self.quarantined_locally = 0

    def close(self) -> None:
        if self.dlq is not None:
            self.dlq.close()

    def park(self, record: FailureRecord) -> None:
        log.error("dead-lettered %s", record.summary())
        body = record.encode()
        if self.dlq is not None and len(body) <= self.dlq.max_message_bytes:
            try:
                self.dlq.publish([OutgoingMessage(body, record.id, record.id)])
                self.parked += 1
                return
            except BridgeError as exc:
                log.error("dead-letter queue refused record %s (%s); writing it locally", record.id, exc)
        self._write_local(record.id, body)

    def _write_local(self, name: str, body: bytes) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self.quarantine_dir / f"{name}.failure.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.quarantined_locally += 1
        log.error("failure record kept in %s", path)
