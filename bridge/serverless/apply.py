"""The apply function: a Kinesis or SQS event of envelopes -> the daemon's :class:`~bridge.apply.loop.Applier`.

Each invocation runs :meth:`Applier.process` over the event's messages, exactly as ``bridge-apply``
does over a received batch: verify, dedupe, last-writer-wins per change, park failures. Two things
differ, both in the parker handed to it (:class:`EventParker`):

* a transient failure (throttled, timed out) is not put on a retry queue: the mapping is the retry
  queue. Its message is named in ``batchItemFailures`` and comes again (for Kinesis the mapping
  resumes at the lowest one named; later messages come again too, and dedupe absorbs them). An SQS
  message received ``retry_max_attempts`` times is parked instead;
* parked and quarantined records go to the parked destination (``<dead_letter>.parked``, as the
  daemon names it, so ``bridge dlq`` reads both forms); if it refuses them the whole batch fails
  rather than writing them to the container's disk, which dies with the container.

A :class:`~bridge.errors.SystemicError` (table gone, access denied, no trusted key matches) fails the
whole batch: the mapping retries it later and nothing is parked for a failure every message meets.
The applier is built once per container; its memory of applied envelope ids is cleared before each
batch, since the mapping may deliver again messages that must then be applied (dedupe within a batch
stays; across batches the conditional writes find redeliveries duplicate anyway).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bridge.config import ApplyConfig
from bridge.deadletter.records import FailureRecord, Parker, State
from bridge.envelope import Scope
from bridge.errors import TransportError
from bridge.plugin.manager import plugin_set
from bridge.serverless import events
from bridge.serverless.secrets import load_trust
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge.transport.reliable import ReliableTransport
from bridge.wiring import build_applier, open_target

log = logging.getLogger(__name__)


class EventTransport(Transport):
    """The event's messages as the applier's source: received already, acked by the response."""

    schemes: ClassVar[tuple[str, ...]] = ("lambda-event",)

    def __init__(self) -> None:
        super().__init__(TransportURL.parse("lambda-event://event"))

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise TransportError("an event source is read-only")

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        return []

    def ack(self, delivery: Delivery) -> None:
        """Nothing to do: every message not named in the response is done with."""


class EventParker(Parker):
    """Turns retrying records into items of the response; parks the rest on the parked queue only."""

    # A container's disk goes with it: a refused record fails the batch, which the mapping brings back.
    local_fallback = False

    def __init__(self, parked: ReliableTransport, max_receives: int) -> None:
        super().__init__(None, Path("/nonexistent"), parked=parked)
        self.max_receives = max_receives
        self.items: dict[bytes, events.Item] = {}
        self.retry: list[str] = []

    def begin(self, deliveries: list[Delivery]) -> None:
        self.retry = []
        self.items = {}
        for delivery in deliveries:
            self.items.setdefault(delivery.body, delivery.handle)

    def park_all(self, records: Sequence[FailureRecord]) -> None:
        terminal = []
        for record in records:
            item = self.items.get(record.payload)
            if record.state is State.RETRYING and item is not None:
                if item.receives < self.max_receives:
                    log.warning("retrying via the event source: %s", record.summary())
                    if item.identifier not in self.retry:
                        self.retry.append(item.identifier)
                    continue
                why = f"gave up after {item.receives} receives"
                terminal.append(record.with_(state=State.PARKED, retry_at=None, message=f"{record.message} ({why})"))
                continue
            terminal.append(record)
        super().park_all(terminal)


class ApplyFunction:
    def __init__(self, cfg: ApplyConfig, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self.trust = load_trust(cfg.trusted_keys, Scope.of(cfg.accepted_tables, cfg.accept_origins))
        self.target = open_target(cfg)
        plugins = plugin_set()  # this container's, built once: the handler is the composition root here
        main = plugins.open(cfg.transport, "consume")  # names the dead-letter queue; never connected
        dlq_url = TransportURL.parse(cfg.dead_letter) if cfg.dead_letter else main.dead_letter_url()
        parked = ReliableTransport(plugins.open(plugins.sibling(dlq_url, "parked"), "dlq"), stop=stop)
        self.parker = EventParker(parked, max_receives=cfg.retry_max_attempts)
        source = ReliableTransport(EventTransport(), stop=stop)
        self.applier = build_applier(
            cfg, stop, trust=self.trust, target=self.target, source=source, parker=self.parker, plugins=plugins
        )

    def handle(self, event: Any) -> dict[str, Any]:
        deliveries = events.deliveries(event)
        if not deliveries:
            return events.response([])
        self.parker.begin(deliveries)
        self.applier.forget_envelopes()
        try:
            self.applier.process(deliveries)  # SystemicError and a refused park propagate: the whole batch again
        finally:
            self.applier.sync_metrics()
        return events.response(self.parker.retry)
