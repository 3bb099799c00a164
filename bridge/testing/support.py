"""Helpers the conformance kit is built from; usable in a plugin's own tests too.

Everything here waits with a deadline and returns what it saw: the caller asserts.
No timing is ever asserted, so a slow machine makes a test slower, never red.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence

from bridge.transport import Delivery, OutgoingMessage, Transport


def digest(body: bytes) -> str:
    """A short name for a body, for comparisons and readable assertion messages."""
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def make_messages(tag: str, count: int, size: int = 64, partition_key: str = "p0") -> list[OutgoingMessage]:
    """``count`` messages whose bodies are unique (tag and index first, then random bytes)."""
    out = []
    for i in range(count):
        head = f"{tag}:{i}:".encode()
        # Too small for the head (a 1-byte body): random, so unique only by chance.
        body = head + os.urandom(size - len(head)) if size >= len(head) else os.urandom(size)
        out.append(OutgoingMessage(body, f"{tag}-{i}", partition_key))
    return out


def receive_until(
    transport: Transport,
    done: Callable[[list[Delivery]], bool],
    timeout: float,
    *,
    ack: bool = True,
    batch: int = 50,
) -> list[Delivery]:
    """Receive (and ack, unless ``ack=False``) until ``done(received)`` or ``timeout`` s."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        received = transport.receive(batch, timeout=min(1.0, remaining))
        got.extend(received)
        if ack:
            for delivery in received:
                transport.ack(delivery)
    return got


def receive_bodies(
    transport: Transport, bodies: Iterable[bytes], timeout: float, *, ack: bool = True
) -> list[Delivery]:
    """Receive until every one of ``bodies`` arrived at least once (or ``timeout``)."""
    wanted = {digest(b) for b in bodies}

    def complete(got: list[Delivery]) -> bool:
        return wanted <= {digest(d.body) for d in got}

    return receive_until(transport, complete, timeout, ack=ack)


def receive_for(transport: Transport, seconds: float, *, ack: bool = True) -> list[Delivery]:
    """Everything that arrives within ``seconds`` (to show that nothing more comes)."""
    return receive_until(transport, lambda _: False, seconds, ack=ack)


def missing(sent: Sequence[OutgoingMessage], got: Sequence[Delivery]) -> list[str]:
    """Message ids of ``sent`` whose body never arrived."""
    seen = {digest(d.body) for d in got}
    return [m.message_id for m in sent if digest(m.body) not in seen]


class Child:
    """``python -m bridge.testing.child``: a second process holding a transport, to SIGKILL.

    It opens the URL through the installed plugins (as bridge-publish/bridge-apply do),
    so the plugin must be installed (``pip install -e .``) for the cross-process tests.
    """

    def __init__(self, *args: str) -> None:
        # A file, not a pipe: a chatty child must never block on a full stderr pipe.
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge.testing.child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def report(self) -> dict[str, object]:
        """The one JSON line the child prints once it holds what it was asked for."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            raise AssertionError(f"the child process exited without a report:\n{self.stderr()[-3000:]}")
        result: dict[str, object] = json.loads(line)
        return result

    def kill(self) -> None:
        """SIGKILL: no close(), no ack, no goodbye to the broker."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def stderr(self) -> str:
        """What the child logged (its own errors included)."""
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._stderr.close()
