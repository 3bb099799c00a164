"""The Redis Streams transport: XADD in MULTI/EXEC, consumer groups, XAUTOCLAIM redelivery."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import redis
import redis.exceptions as rex

from bridge.errors import BridgeError, RecoverableTransportError, TransportError
from bridge.transport import Delivery, OutgoingMessage, Transport, TransportURL
from bridge_redis.settings import RedisSettings

log = logging.getLogger(__name__)

# Stream entry fields. Short: they are stored with every entry.
BODY, MESSAGE_ID, PARTITION_KEY = b"b", b"id", b"pk"
# One MULTI/EXEC carries at most this much, so a big batch does not sit whole in the
# server's query buffer (client-query-buffer-limit, 1 GB by default).
PIPELINE_BYTES = 64 * 1024 * 1024
# Trim acknowledged entries after this many acks, or this long after the last trim.
TRIM_EVERY_ACKS = 1000
TRIM_EVERY_S = 30.0

RECOVERABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # refused, reset, EOF; includes BusyLoadingError (server starting)
    rex.TimeoutError,
    rex.ReadOnlyError,  # failover: we are talking to a replica that was the primary
    rex.TryAgainError,
    rex.MasterDownError,
    rex.OutOfMemoryError,  # maxmemory reached: consumers draining the stream frees it
)
# Every consumer object leaves its name in the group; crashed ones (and ones that gave
# entries back on close) are removed once they hold nothing and were idle for
# claim_idle_ms. In one script, so no XREADGROUP can slip between the check and the
# delete: XGROUP DELCONSUMER drops a consumer's pending entries with it. A live consumer
# that is removed is simply recreated by its next XREADGROUP.
FORGET_IDLE_CONSUMERS = """
local removed = 0
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #fields, 2 do c[fields[i]] = fields[i + 1] end
  if c['pending'] == 0 and c['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    removed = removed + 1
  end
end
return removed
"""
# ConnectionError subclasses that reconnecting will not fix.
FATAL: tuple[type[BaseException], ...] = (rex.AuthenticationError, rex.AuthorizationError)


class RedisTransport(Transport):
    """Redis Streams: ``redis[s]://[user:pass@]host:port/db?stream=NAME``.

    Publishing is ``XADD`` inside ``MULTI``/``EXEC``: the batch is added atomically and
    the EXEC reply (one entry id per message) is the confirmation. Consuming is
    ``XREADGROUP`` in consumer group ``group`` (created at id 0 on first use, so nothing
    published before the first consumer is missed), with this object as its own consumer.
    ``XACK`` acks. Entries another consumer left unacked for ``claim_idle_ms`` (it
    crashed) are taken over with ``XAUTOCLAIM`` and delivered again, marked redelivered.
    The stream is never trimmed past an unacked entry of any group: consumers trim it
    (``XTRIM MINID``) up to the oldest entry some group still needs.

    Not thread-safe: use one object from one thread.
    """

    schemes = ("redis", "rediss")
    # Redis takes bulk strings up to proto-max-bulk-len (512 MB by default); 64 MiB keeps
    # one entry well inside it and inside the server's memory budget.
    max_message_bytes = 64 * 1024 * 1024
    recoverable_errors = RECOVERABLE

    def __init__(self, url: TransportURL) -> None:
        super().__init__(url)
        self.settings = RedisSettings.from_url(url)
        self.fail_within = self.settings.connect_timeout + 1.0
        self.stream = self.settings.stream
        self.group = self.settings.group
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: redis.Redis | None = None
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._outstanding: set[str] = set()  # delivered to us, not yet acked or released
        self._acks_since_trim = 0
        self._last_trim = time.monotonic()

    # -- publishing -----------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with self._boundary("publish"):
            client = self._ready()
            for chunk in _chunks(messages, PIPELINE_BYTES):
                pipe = client.pipeline(transaction=True)
                for m in chunk:
                    # No MAXLEN: trimming on publish could drop entries nobody acked yet.
                    pipe.xadd(self.stream, {BODY: m.body, MESSAGE_ID: m.message_id, PARTITION_KEY: m.partition_key})
                ids = pipe.execute()  # raises on any refused entry; EXEC is all or nothing
                if len(ids) != len(chunk):
                    raise TransportError(f"EXEC answered {len(ids)} of {len(chunk)} XADDs on {self.settings.where}")

    # -- consuming ------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        with self._boundary("receive"):
            client = self._ready()
            out = self._claim(client, max_messages)
            wanted = max_messages - len(out)
            if wanted > 0:
                # Block only when there is nothing to hand back; BLOCK 0 would mean forever.
                wait = min(timeout, self.settings.socket_timeout / 2)
                wait_ms = None if out or timeout <= 0 else max(1, int(wait * 1000))
                # RESP2 answers [[stream, [(id, fields), ...]]]; redis-py types every protocol's shape.
                reply: Any = client.xreadgroup(
                    self.group, self.consumer, {self.stream: ">"}, count=wanted, block=wait_ms
                )
                for _stream, entries in reply or []:
                    out += [self._delivery(entry_id, fields, redelivered=False) for entry_id, fields in entries]
            return out

    def _claim(self, client: redis.Redis, count: int) -> list[Delivery]:
        """Take over entries some consumer has left unacked for ``claim_idle_ms``."""
        reply = client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        # Redis 7 answers [cursor, entries, deleted ids]; 6.2 has no third element and
        # lists deleted entries with no fields.
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = _text(cursor)
        claimed = []
        for entry_id, fields in entries:
            if fields:
                claimed.append(self._delivery(entry_id, fields, redelivered=True))
            else:  # trimmed or deleted while pending: nothing left to deliver
                client.xack(self.stream, self.group, entry_id)
        if claimed:
            log.info(
                "took over %d deliveries left unacked for %d ms on %s",
                len(claimed),
                self.settings.claim_idle_ms,
                self.settings.where,
            )
        return claimed

    def _delivery(self, entry_id: Any, fields: dict[bytes, bytes], redelivered: bool) -> Delivery:
        handle = _text(entry_id)
        self._outstanding.add(handle)
        message_id = fields.get(MESSAGE_ID)
        return Delivery(
            body=bytes(fields.get(BODY, b"")),
            message_id=message_id.decode() if message_id is not None else None,
            redelivered=redelivered,
            handle=handle,
        )

    def ack(self, delivery: Delivery) -> None:
        with self._boundary("ack"):
            client = self._ready()
            client.xack(self.stream, self.group, delivery.handle)
            self._outstanding.discard(delivery.handle)
            self._acks_since_trim += 1
            if self._acks_since_trim >= TRIM_EVERY_ACKS or time.monotonic() - self._last_trim >= TRIM_EVERY_S:
                self.trim()

    def release(self, delivery: Delivery) -> None:
        with self._boundary("release"):
            self._give_back(self._ready(), [delivery.handle])

    def _give_back(self, client: redis.Redis, entry_ids: list[Any]) -> None:
        """Make entries claimable at once: Redis has no nack, but an entry that looks idle
        for ``claim_idle_ms`` is taken over by the next XAUTOCLAIM of any consumer."""
        if not entry_ids:
            return
        client.xclaim(
            self.stream, self.group, self.consumer, 0, entry_ids, idle=self.settings.claim_idle_ms + 1000, justid=True
        )
        self._outstanding.difference_update(entry_ids)
        self._claim_cursor = "0-0"  # they may lie behind the cursor

    # -- housekeeping ---------------------------------------------------------------

    def trim(self, approximate: bool = True) -> int:
        """Drop entries every consumer group has acknowledged; returns how many went.

        The cut is the oldest entry any group still needs: its oldest pending entry, or
        for a group with none pending, the first entry after its last delivered one.
        """
        with self._boundary("trim"):
            client = self._ready()
            self._acks_since_trim, self._last_trim = 0, time.monotonic()
            cuts = []
            for info in client.xinfo_groups(self.stream):
                name = info["name"]
                if info["pending"]:
                    cuts.append(_stream_id(client.xpending(self.stream, name)["min"]))
                else:
                    ms, seq = _stream_id(info["last-delivered-id"])
                    cuts.append((ms, seq + 1))
            if not cuts:
                return 0
            ms, seq = min(cuts)
            trimmed = int(client.xtrim(self.stream, minid=f"{ms}-{seq}", approximate=approximate))
            client.eval(FORGET_IDLE_CONSUMERS, 1, self.stream, self.group, self.settings.claim_idle_ms)
            return trimmed

    def close(self) -> None:
        """Give unacked deliveries back (claimable at once), then disconnect."""
        client, self._client = self._client, None
        self._group_ready = False
        if client is None:  # dropped after an error: claim_idle_ms brings ours back
            self._outstanding.clear()
            return
        try:
            self._give_back(client, sorted(self._outstanding))
            # A consumer with nothing pending can go; one with entries must stay, or
            # they would be dropped from the pending list unacked.
            if not client.xpending_range(self.stream, self.group, "-", "+", 1, consumername=self.consumer):
                client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except (rex.RedisError, OSError) as exc:  # the server may be gone: it redelivers after claim_idle_ms
            log.debug("closing %s: %s", self.settings.where, exc)
        finally:
            self._outstanding.clear()
            with contextlib.suppress(Exception):
                client.close()

    # -- shared -----------------------------------------------------------------------

    def _ready(self) -> redis.Redis:
        """The client, with the stream and consumer group created on first use."""
        if self._client is None:
            self._client = self.settings.client(f"ddb-bridge:{self.consumer}")
        if not self._group_ready:
            try:
                self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except rex.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._group_ready = True
        return self._client

    def _drop(self) -> None:
        """Forget the connection without talking to the server (it may be gone)."""
        client, self._client = self._client, None
        self._group_ready = False
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    @contextlib.contextmanager
    def _boundary(self, action: str) -> Iterator[None]:
        """Map redis-py errors to bridge errors; a connection problem drops the client."""
        where = self.settings.where
        try:
            yield
        except BridgeError:
            raise
        except FATAL as exc:
            self._drop()
            raise TransportError(f"{action} on {where} refused: {exc}") from exc
        except rex.ConnectionError as exc:
            self._drop()
            if isinstance(exc.__cause__ or exc.__context__, ssl.SSLCertVerificationError) or (
                "CERTIFICATE_VERIFY_FAILED" in str(exc)
            ):
                raise TransportError(f"{action} on {where}: server certificate rejected: {exc}") from exc
            raise RecoverableTransportError(f"{action} on {where}: connection lost ({exc}); will reconnect") from exc
        except RECOVERABLE as exc:
            self._drop()
            raise RecoverableTransportError(f"{action} on {where}: {type(exc).__name__}: {exc}") from exc
        except rex.ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                # The stream or group was deleted under us: create them again and retry.
                self._group_ready = False
                raise RecoverableTransportError(f"{action} on {where}: {exc}; recreating the group") from exc
            raise TransportError(f"{action} on {where} failed: {exc}") from exc
        except rex.RedisError as exc:
            self._drop()
            raise TransportError(f"{action} on {where} failed: {type(exc).__name__}: {exc}") from exc

    def sibling(self, suffix: str) -> TransportURL:
        """The same server, stream ``NAME.SUFFIX``."""
        return self.url.replace(stream=f"{self.stream}.{suffix}")

    def __repr__(self) -> str:
        return f"RedisTransport({self.settings.where!r})"


def _chunks(messages: Sequence[OutgoingMessage], max_bytes: int) -> Iterator[Sequence[OutgoingMessage]]:
    start, size = 0, 0
    for i, m in enumerate(messages):
        if i > start and size + len(m.body) > max_bytes:
            yield messages[start:i]
            start, size = i, 0
        size += len(m.body)
    yield messages[start:]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)
