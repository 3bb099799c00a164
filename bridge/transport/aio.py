"""Driving an asyncio-only client library from a (synchronous) transport.

Core calls a transport from one thread and never awaits. :class:`LoopThread` gives one
transport object a private event loop on its own daemon thread: ``run(coro)`` submits a
coroutine and blocks until it finishes. The loop starts on first use and stops with
:meth:`LoopThread.stop` (call it from the transport's ``close()``); ``run`` after ``stop``
starts a new loop, since core uses a transport again after closing it. A private loop per
object means no state of the client library is ever shared between transports or threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from bridge.errors import RecoverableTransportError

T = TypeVar("T")


class LoopThread:
    """One event loop on one daemon thread, for one transport object."""

    def __init__(self, name: str = "bridge-transport-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception).

        After ``timeout`` seconds the coroutine is cancelled and RecoverableTransportError
        raised: a hung broker must not hang the caller.
        """
        loop = self._start()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise RecoverableTransportError(f"no answer within {timeout} s") from exc

    def stop(self, cleanup: Coroutine[Any, Any, object] | None = None, timeout: float = 5.0) -> None:
        """Run ``cleanup`` (closing the client) if given, then stop the loop and its thread.
        Harmless when not running; never raises for the cleanup, since closing a broken
        connection often fails and the caller is closing anyway."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            if cleanup is not None:
                cleanup.close()  # never started: nothing to clean up, and no "never awaited" warning
            return
        if cleanup is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cleanup, loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop
