"""Relay over the real RabbitMQ: the bridge's transport stack vs raw kombu on the same bytes.

Each side runs its producer and its consumer in processes of their own (as bridge-publish and
bridge-apply run), connected and waiting before a common start signal, so start-up is not timed.

* bridge: the encoded envelopes are published through ReliableTransport + AmqpTransport, one
  envelope per confirmed publish (as Sender sends them), and consumed through the same stack:
  receive (prefetch 64, 16 at a time as bridge-apply takes them), verify + decompress + parse
  each envelope (decode), ack. Encoding is timed by ``encode_changes_per_s``; the run with
  encoding included is reported in ``detail``.
* raw: the same envelope bytes, kombu ``Producer.publish`` with ``confirm_publish`` (one confirm
  per message, persistent), kombu ``Consumer`` with the same prefetch, ack, no decoding.
* per message (Seed B's shape): every change its own message (Seed B's bytes), a confirm each.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.bench.codec import ORIGIN, TABLE, change_batches
from bridge.bench.context import Bench
from bridge.bench.report import Figure, Goal
from bridge.bench.workloads import ProfileWorkload, seed_b_message
from bridge.envelope import Batch, encode
from bridge.errors import BridgeError

_START_TIMEOUT_S = 60
_RUN_TIMEOUT_S = 240
BATCH_MESSAGES, PREFETCH = 16, 64


def relay(bench: Bench) -> list[Figure]:
    bench.require_amqp("relay_vs_raw_ratio")
    n = bench.scale.relay_changes
    batches = change_batches(n)
    bodies = [encode(Batch(f"relay-{i}", ORIGIN, TABLE, 0, tuple(b)), bench.signer) for i, b in enumerate(batches)]
    sizes = [len(b) for b in batches]
    del batches
    seed = bench.signer_seed
    plan: list[tuple[str, Callable[..., None], Callable[..., None], Any, Any]] = [
        ("raw", _raw_producer, _raw_consumer, bodies, sizes),
        ("bridge", _bridge_producer, _bridge_consumer, bodies, (seed, sizes, True)),
    ] * bench.scale.relay_repeats  # alternating; the best run of each counts
    if not bench.scale.quick:  # where the time goes: without decoding, and with encoding
        plan += [
            ("bridge_transport_only", _bridge_producer, _bridge_consumer, bodies, (seed, sizes, False)),
            ("bridge_with_encode", _bridge_encoding_producer, _bridge_consumer, (n, seed), (seed, sizes, True)),
        ]
    runs: dict[str, Run] = {}
    for i, (name, producer, consumer, produce, consume) in enumerate(plan):
        bench.say(f"relay: {name}, {n:,} changes in {len(bodies)} envelopes")
        run = _run(bench, f"{name}-{i}", producer, consumer, produce, consume, n)
        if name not in runs or run.rate > runs[name].rate:
            runs[name] = run
    m = bench.scale.per_message
    workload = ProfileWorkload(seed=12)
    messages = [seed_b_message(workload.record(p, op))[0] for p, op in enumerate(workload.ops(m))]
    bench.say(f"relay: one change per message with a confirm each, {m:,} messages")
    runs["per_message"] = _run(bench, "per-message", _raw_producer, _raw_consumer, messages, [1] * m, m)
    bridge, raw, per_message = runs["bridge"].rate, runs["raw"].rate, runs["per_message"].rate
    detail = {
        "changes": n,
        "envelopes": len(bodies),
        "per_message_messages": m,
        "envelope_kib": round(sum(map(len, bodies)) / len(bodies) / 1024, 1),
        "runs": {name: run.as_detail() for name, run in runs.items()},
        "timing": "rate: first delivery to last, at the consumer; _s: from the common start",
    }
    return [
        Figure(
            "relay_vs_raw_ratio",
            bridge / raw,
            "ratio",
            raw,
            Goal(">=", 0.8),
            "changes/s",
            measured=f"{bridge:,.0f} changes/s",
            detail=detail,
        ),
        Figure(
            "relay_vs_per_message_ratio",
            bridge / per_message,
            "ratio",
            per_message,
            Goal(">=", 20),
            "changes/s",
            measured=f"{bridge:,.0f} changes/s",
            detail=detail,
        ),
    ]


@dataclass(frozen=True)
class Run:
    rate: float  # changes/s from the first delivery to the last, at the consumer
    producer_s: float  # from the start signal until the producer had every message confirmed
    consumer_s: float  # from the start signal until the consumer had every change

    def as_detail(self) -> dict[str, float]:
        return {"changes_per_s": self.rate, "producer_s": self.producer_s, "consumer_s": self.consumer_s}


def _run(
    bench: Bench,
    name: str,
    producer: Callable[..., None],
    consumer: Callable[..., None],
    produce: Any,
    consume: Any,
    changes: int,
) -> Run:
    """One relay run; the rate counts from the first delivery to the last, at the consumer.

    Timing from the first delivery leaves out what differs only in start-up (the bridge
    connects on its first publish, kombu before) and is the same clock for every run.
    """
    ctx = multiprocessing.get_context("spawn")  # no inherited threads, locks or sockets
    url = bench.queue_url(bench.queue(f"relay-{name}"))
    ready, go, results = ctx.Barrier(3), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=consumer, args=(url, changes, consume, ready, go, results), daemon=True),
        ctx.Process(target=producer, args=(url, produce, ready, go, results), daemon=True),
    ]
    for proc in procs:
        proc.start()
    try:
        with contextlib.suppress(threading.BrokenBarrierError):  # a child failed: reported below
            ready.wait(_START_TIMEOUT_S)
        started = time.time()
        go.set()
        outcome: dict[str, Any] = {}
        deadline = time.monotonic() + _RUN_TIMEOUT_S
        while len(outcome) < 2:
            try:
                role, value = results.get(timeout=1)
            except queue.Empty:
                if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                    raise BridgeError(f"relay figure, {name} run: a child process died or timed out") from None
                continue
            if role == "error":
                raise BridgeError(f"relay figure, {name} run: {value}")
            outcome[role] = value
        first, last, counted = outcome["consumer"]
        return Run(counted / (last - first), outcome["producer"] - started, last - started)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# -- child processes ---------------------------------------------------------------------------
# Each sets up, meets the others at `ready`, and starts on `go`. Consumers report
# (first delivery time, last delivery time, changes delivered after the first message).


def _guard(role: str, results: Any, fn: Callable[[], Any]) -> None:
    try:
        results.put((role, fn()))
    except BaseException as exc:  # reported to the parent, which raises it
        results.put(("error", f"{role}: {type(exc).__name__}: {exc}"))


def _bridge_transport(url: str) -> Any:
    from bridge.plugin.manager import open_transport
    from bridge.transport.reliable import ReliableTransport

    return ReliableTransport(open_transport(url, "bench"))


def _bridge_producer(url: str, bodies: list[bytes], ready: Any, go: Any, results: Any) -> None:
    from bridge.transport import OutgoingMessage

    def run() -> float:
        transport = _bridge_transport(url)
        ready.wait(_START_TIMEOUT_S)
        go.wait(_START_TIMEOUT_S)
        for i, body in enumerate(bodies):  # one envelope per confirmed publish, as Sender sends
            transport.publish([OutgoingMessage(body, f"relay-{i}", f"{ORIGIN}/{TABLE}")])
        transport.close()
        return time.time()

    _guard("producer", results, run)


def _bridge_encoding_producer(url: str, produce: tuple[int, bytes], ready: Any, go: Any, results: Any) -> None:
    import tempfile
    from pathlib import Path

    from bridge.deadletter.records import Parker
    from bridge.envelope import Signer
    from bridge.publish.sender import Sender

    def run() -> float:
        n, seed = produce
        batches = change_batches(n)
        quarantine = Path(tempfile.gettempdir()) / "bridge-bench-quarantine"  # used only if a change is oversize
        sender = Sender(
            _bridge_transport(url), Signer.from_seed(seed), Parker(None, quarantine), origin=ORIGIN, table=TABLE
        )
        ready.wait(_START_TIMEOUT_S)
        go.wait(_START_TIMEOUT_S)
        for batch in batches:
            sender.send(batch)
        sender.close()
        return time.time()

    _guard("producer", results, run)


def _bridge_consumer(
    url: str, changes: int, consume: tuple[bytes, list[int], bool], ready: Any, go: Any, results: Any
) -> None:
    from bridge.envelope import Signer, TrustStore, decode

    def run() -> tuple[float, float, int]:
        seed, sizes, decoding = consume
        trust = TrustStore.of(Signer.from_seed(seed))
        transport = _bridge_transport(url)
        transport.receive(1, 0.01)  # connect and declare the queue before the start
        ready.wait(_START_TIMEOUT_S)
        go.wait(_START_TIMEOUT_S)
        got, messages, first = 0, 0, 0.0
        while got < changes:
            for delivery in transport.receive(BATCH_MESSAGES, 1.0):
                got += len(decode(delivery.body, trust).changes) if decoding else sizes[messages]
                transport.ack(delivery)
                if not messages:
                    first = time.time()
                messages += 1
        done = time.time()
        transport.close()
        return first, done, got - sizes[0]

    _guard("consumer", results, run)


def _kombu(url: str) -> tuple[Any, Any]:
    from kombu.connection import Connection
    from kombu.entity import Queue

    base, _, queue = url.partition("?queue=")
    conn: Any = Connection(  # type: ignore[no-untyped-call]
        base, transport="pyamqp", transport_options={"confirm_publish": True}
    )
    conn.ensure_connection(max_retries=3)
    return conn, Queue(queue, durable=True, auto_delete=False)  # type: ignore[no-untyped-call]


def _raw_producer(url: str, bodies: list[bytes], ready: Any, go: Any, results: Any) -> None:
    from kombu.entity import Exchange
    from kombu.messaging import Producer

    def run() -> float:
        conn, queue = _kombu(url)
        channel = conn.channel()
        queue(channel).declare()
        exchange = Exchange("")  # type: ignore[no-untyped-call]
        producer: Any = Producer(channel, exchange=exchange, routing_key=queue.name)  # type: ignore[no-untyped-call]
        ready.wait(_START_TIMEOUT_S)
        go.wait(_START_TIMEOUT_S)
        for body in bodies:  # confirm_publish: each publish returns once the broker confirmed it
            producer.publish(
                body,
                delivery_mode=2,
                content_type="application/octet-stream",
                content_encoding="binary",
                mandatory=True,
            )
        conn.release()
        return time.time()

    _guard("producer", results, run)


def _raw_consumer(url: str, changes: int, sizes: list[int], ready: Any, go: Any, results: Any) -> None:
    from kombu.messaging import Consumer

    def run() -> tuple[float, float, int]:
        conn, queue = _kombu(url)
        channel = conn.channel()
        queue(channel).declare()
        state = {"messages": 0, "changes": 0, "first": 0.0}

        def on_message(message: Any) -> None:
            message.ack()
            if not state["messages"]:
                state["first"] = time.time()
            state["messages"] += 1
            state["changes"] += sizes[int(state["messages"]) - 1]

        consumer: Any = Consumer(  # type: ignore[no-untyped-call]
            channel, queues=[queue], on_message=on_message, prefetch_count=PREFETCH
        )
        ready.wait(_START_TIMEOUT_S)
        go.wait(_START_TIMEOUT_S)
        with consumer:
            while state["changes"] < changes:
                conn.drain_events(timeout=5)
        done = time.time()
        conn.release()
        return state["first"], done, int(state["changes"]) - sizes[0]

    _guard("consumer", results, run)
