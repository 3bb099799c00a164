"""bridge.transport.aio: a private event loop thread per transport object (no services needed)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bridge.errors import RecoverableTransportError
from bridge.transport.aio import LoopThread


async def where() -> tuple[str, asyncio.AbstractEventLoop]:
    return threading.current_thread().name, asyncio.get_running_loop()


async def fail() -> None:
    raise ValueError("from the loop")


def test_coroutines_run_on_one_private_thread_and_loop_per_object() -> None:
    first, second = LoopThread("one"), LoopThread("two")
    try:
        name_a, loop_a = first.run(where())
        name_b, loop_b = first.run(where())
        name_c, loop_c = second.run(where())
        assert (name_a, name_b, name_c) == ("one", "one", "two")
        assert loop_a is loop_b and loop_a is not loop_c
        with pytest.raises(ValueError, match="from the loop"):  # exceptions arrive as they are
            first.run(fail())
    finally:
        first.stop()
        second.stop()
    assert not first.running and not second.running


def test_stop_runs_the_cleanup_and_run_after_stop_starts_a_new_loop() -> None:
    loop_thread = LoopThread()
    _, old = loop_thread.run(where())
    cleaned: list[str] = []

    async def cleanup() -> None:
        cleaned.append(threading.current_thread().name)

    loop_thread.stop(cleanup())
    assert cleaned == ["bridge-transport-loop"] and old.is_closed()
    loop_thread.stop()  # twice is harmless
    _, new = loop_thread.run(where())  # core uses a transport again after close()
    assert new is not old and not new.is_closed()
    loop_thread.stop()


def test_a_hung_coroutine_is_cancelled_with_a_recoverable_error() -> None:
    loop_thread = LoopThread()
    cancelled = threading.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        with pytest.raises(RecoverableTransportError, match=r"no answer within 0\.2 s"):
            loop_thread.run(hang(), timeout=0.2)
        assert cancelled.wait(5), "the coroutine was left running on the loop"
    finally:
        loop_thread.stop()
