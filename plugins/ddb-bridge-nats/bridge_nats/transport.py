"""The NATS JetStream transport: confirmed publishes, one durable pull consumer per stream."""

import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError, StaleConnectionError
from nats.js.api import ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from bridge.errors import ConfigError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge.transport.aio import LoopThread
from bridge.transport.params import TLS_PARAMS, UrlParams

KNOWN_PARAMS = frozenset({"consumer", "ack_wait", "connect_timeout", "creds", "nkey", *TLS_PARAMS})
# Headers count against the server's max_payload: NATS/1.0 and Nats-Msg-Id with an id of up
# to MAX_MESSAGE_ID characters, with room to spare.
HEADER_ROOM = 512
ID = "Nats-Msg-Id"  # JetStream deduplicates on it within the stream's duplicate window
# Reconnecting may help after these; NoResponders and NotFound: the stream was deleted under us.
# Wrong credentials (nats.errors.Error) and a rejected certificate (ssl.SSLCertVerificationError)
# are not among them. TimeoutError covers nats.errors.TimeoutError.
_LOST = (NoServersError, ConnectionClosedError, StaleConnectionError, NoRespondersError, NotFoundError)
RECOVERABLE: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, *_LOST, ServiceUnavailableError)


class NatsTransport(Transport):
    """JetStream: ``nats[s]://...HOST/STREAM`` (parameters: see :mod:`bridge_nats`).

    ``publish`` waits for JetStream's ack of every message, in order, with ``Nats-Msg-Id`` set
    to the message id. ``receive`` fetches from the durable pull consumer; ``ack`` acks, and
    ``release`` and ``close`` nak what is held, so it is redelivered at once. One stream is one
    ordered log, so per-key order holds. Not thread-safe: one object, one thread.
    """

    schemes = ("nats", "tls")
    name_separator = "-"  # JetStream names cannot contain "."
    max_message_bytes = 1024 * 1024 - HEADER_ROOM  # until the server says its max_payload
    recoverable_errors = RECOVERABLE

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        params = UrlParams(url, KNOWN_PARAMS)
        self.stream = url.path.strip("/")
        if not self.stream.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{params.where!r} must name a stream of letters, digits, - and _: nats://HOST/STREAM")
        self.consumer = params.text("consumer", "bridge")
        self.ack_wait = params.number("ack_wait", 60.0, float, minimum=0.5)
        connect_timeout = params.number("connect_timeout", 2.0, float, minimum=0.1)
        self.fail_within = 2 * connect_timeout + 2.0  # two connect attempts, then the stream's creation
        user, password = params.credentials()
        host, port = params.host_port(4222)
        auth = {"user": user, "password": password} if password else {"token": user} if user else {}
        files = {"user_credentials": params.file("creds"), "nkeys_seed": params.file("nkey")}
        # No reconnecting inside nats-py: core's retry loop is the one loop. Its first connect
        # retries until max_reconnect_attempts, and 0 means forever: 1 is two quick attempts.
        retries = {"allow_reconnect": False, "max_reconnect_attempts": 1, "reconnect_time_wait": 0.1}
        self._options: dict[str, Any] = {**retries, **auth, **files, "tls": params.ssl_context(("tls",))}
        self._options |= {"servers": [f"{url.scheme}://{host}:{port}"], "connect_timeout": connect_timeout}
        self._loop = LoopThread(f"nats {self.stream}")
        self._nc: Any = None
        self._sub: Any = None
        self._held: dict[str, Msg] = {}  # received, not yet acked or released, by ack subject

    def _run(self, coro: Coroutine[Any, Any, Any], wait: float = 0.0) -> Any:
        return self._loop.run(coro, self.fail_within + 2 * wait)

    def connect(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            self._nc, self._sub, self._held = None, None, {}
            self._nc = self._run(nats.connect(**self._options))
            self.max_message_bytes = min(self.max_message_bytes, self._nc.max_payload - HEADER_ROOM)
            # Created on first use, and again if deleted under us. BadRequest: it exists with
            # other settings (limits an operator set): use it as it is.
            with contextlib.suppress(BadRequestError):
                self._run(self._nc.jetstream().add_stream(name=self.stream, subjects=[self.stream]))

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.connect()
        js = self._nc.jetstream(timeout=self.fail_within)
        for m in messages:  # one at a time: the ack of each comes before the next is sent
            self._run(js.publish(self.stream, m.body, headers={ID: m.message_id}))

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        self.connect()
        # A pull is a request: even with nothing to wait for, it needs one round trip (0.2 s floor).
        msgs: list[Msg] = self._run(self._pull(max_messages, max(timeout, 0.2)), timeout)
        self._held.update((m.reply, m) for m in msgs)
        return [Delivery(m.data, (m.headers or {}).get(ID), m.metadata.num_delivered > 1, m.reply) for m in msgs]

    async def _pull(self, count: int, wait: float) -> list[Msg]:
        js = self._nc.jetstream(timeout=self.fail_within)
        if self._sub is None:
            self._sub = await js.pull_subscribe(
                self.stream, self.consumer, config=ConsumerConfig(ack_wait=self.ack_wait)
            )
        try:
            return list(await self._sub.fetch(count, timeout=wait))
        except TimeoutError:  # nats.errors.TimeoutError: nothing arrived
            # An empty pull looks the same when the stream was deleted: ask, so that raises.
            await js.consumer_info(self.stream, self.consumer)
            return []

    def ack(self, delivery: Delivery) -> None:
        msg = self._held.pop(delivery.handle, None)
        if msg is not None:  # else received before a close(): the broker redelivers it
            self._run(msg.ack())  # not confirmed: a lost ack means a redelivery, which is harmless

    def release(self, delivery: Delivery) -> None:
        msg = self._held.pop(delivery.handle, None)
        if msg is not None:
            self._run(msg.nak())

    def close(self) -> None:
        nc, held, self._nc, self._sub, self._held = self._nc, list(self._held.values()), None, None, {}

        async def shut() -> None:
            for msg in held:  # back at once, not after ack_wait
                await msg.nak()
            await nc.close()  # flushes the acks and naks

        self._loop.stop(shut() if nc is not None else None)
