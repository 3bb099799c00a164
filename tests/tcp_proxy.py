"""A loopback TCP proxy that fails the way a real internet hop does, for tests.

``cut()`` closes every open connection (RST-like: both sides see the close); ``freeze()`` stops
forwarding on the open connections but keeps their sockets open, as a middlebox or TLS terminator
whose far side died does (nobody sees a close; bytes are accepted and go nowhere); ``black_hole()``
does that to new connections as well. ``heal()`` forwards new connections again; frozen ones stay
frozen, as their state in a real middlebox is gone.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.frozen = False

    def close(self) -> None:
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.close()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._holing = False
        self._closed = threading.Event()
        self.accepted = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="proxy-accept")]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                holing = self._holing
            upstream = socket.create_connection(self.upstream)
            pair = _Pair(client, upstream)
            pair.frozen = holing
            with self._lock:
                self._pairs.append(pair)
            t = threading.Thread(target=self._pump, args=(pair,), daemon=True, name="proxy-pump")
            t.start()

    def _pump(self, pair: _Pair) -> None:
        sel = selectors.DefaultSelector()
        sel.register(pair.client, selectors.EVENT_READ, pair.upstream)
        sel.register(pair.upstream, selectors.EVENT_READ, pair.client)
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    if pair.frozen:
                        continue  # swallowed: the far side never hears of it
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            if not pair.frozen:
                pair.close()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def freeze(self) -> None:
        with self._lock:
            for pair in self._pairs:
                pair.frozen = True

    def black_hole(self) -> None:
        self.freeze()
        with self._lock:
            self._holing = True

    def heal(self) -> None:
        with self._lock:
            self._holing = False

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()


@contextlib.contextmanager
def tcp_proxy(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
