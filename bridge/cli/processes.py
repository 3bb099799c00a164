"""``bridge-apply --processes N``: N consumers on one queue, as one supervised process group.

One Python process holds one core (the GIL), so an applier tops out near what one core decodes,
verifies and sends. Last writer wins makes the order across consumers irrelevant (each change is a
conditional write on its version; docs/consistency.md), so more consumers on the same queue need
no coordination: the broker hands each message to one of them and redelivers a dead one's unacked
messages.

The children are plain ``python -m bridge.cli.apply ... --processes 1 --child-index I`` processes
(not ``multiprocessing`` workers): each is exactly today's one-process applier with its own
connection, workers and exit code, and nothing is shared or pickled. The parent only supervises:

- SIGTERM/SIGINT to the parent: SIGTERM to every child, which finishes its in-flight work; the
  parent exits 0 when they all did.
- A child killed by a signal (OOM killer, SIGKILL) or crashed (exit 1, an unhandled error) is
  started again after a backoff (1 s doubling to 30 s); its unacked messages went back to the queue.
- A child exiting with a handled error's code (2 config, 9 paused past ``max_paused``, 10 parked
  with ``until_idle``, ...) stops the line: the others are stopped and the parent exits with that code.
- A child exiting 0 unasked (``until_idle``: it found the queue idle) is done; the parent exits 0 once
  every child is.
- A child whose parent vanished (the parent SIGKILLed) stops itself: see :func:`watch_parent`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("bridge.processes")

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
# A crash that repeats this often is not a flake: stop the line (exit 1) rather than spin forever.
CRASH_WINDOW_S = 60.0
CRASH_LIMIT = 10


def resolve(processes: int) -> int:
    """``0`` means one per core."""
    return processes if processes > 0 else max(1, os.cpu_count() or 1)


def restartable(code: int) -> bool:
    """Killed by a signal, or an unhandled error (Python's exit 1): start it again."""
    return code < 0 or code == 1


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    done: bool = False  # exited 0: drained (until_idle) or stopped
    restart_at: float = 0.0  # monotonic time it may start again
    crashes: list[float] = field(default_factory=list)


def supervise(
    processes: int, argv: list[str], stop: threading.Event, *, poll_s: float = 0.2, module: str = "bridge.cli.apply"
) -> int:
    """Run ``processes`` children of ``module`` with ``argv`` until stopped or all done; the group's exit code."""
    children = [Child(i) for i in range(processes)]
    code = 0
    log.info("starting %d consumer processes", processes)
    try:
        while not stop.is_set():
            now = time.monotonic()
            for child in children:
                if child.done:
                    continue
                if child.proc is None:
                    if now >= child.restart_at:
                        child.proc = _start(module, argv, child.index)
                    continue
                rc = child.proc.poll()
                if rc is None:
                    continue
                child.proc = None
                if rc == 0:
                    child.done = True
                    log.info("process %d finished", child.index)
                elif restartable(rc):
                    child.crashes = [t for t in child.crashes if now - t < CRASH_WINDOW_S] + [now]
                    if len(child.crashes) >= CRASH_LIMIT:
                        log.error(
                            "process %d failed %d times in %.0f s: stopping", child.index, CRASH_LIMIT, CRASH_WINDOW_S
                        )
                        code = 1
                        stop.set()
                        break
                    delay = min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (len(child.crashes) - 1))
                    child.restart_at = now + delay
                    how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited {rc}"
                    log.warning("process %d %s: starting it again in %.0f s", child.index, how, delay)
                else:
                    log.error("process %d exited %d: stopping the others", child.index, rc)
                    code = rc
                    stop.set()
                    break
            if all(c.done for c in children):
                break
            stop.wait(poll_s)
    finally:
        code = _stop_all(children, code)
    return code


def _start(module: str, argv: list[str], index: int) -> subprocess.Popen[bytes]:
    # The last --processes wins in click: the child runs today's one-process applier.
    cmd = [sys.executable, "-m", module, *argv, "--processes", "1", "--child-index", str(index)]
    proc = subprocess.Popen(cmd)  # stdout/stderr inherited: one log stream, one summary line per child
    log.info("process %d started (pid %d)", index, proc.pid)
    return proc


def _stop_all(children: list[Child], code: int) -> int:
    """SIGTERM to each running child, then wait for all: each finishes its in-flight work."""
    running = [c for c in children if c.proc is not None]
    for child in running:
        assert child.proc is not None
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in running:
        assert child.proc is not None
        rc = child.proc.wait()
        if rc != 0 and code == 0 and not restartable(rc):
            code = rc  # e.g. until_idle's 10: work was left for an operator
        elif rc != 0:
            log.warning("process %d exited %d while stopping", child.index, rc)
    return code


def watch_parent(stop: threading.Event, interval_s: float = 1.0) -> None:
    """In a child: stop (drain, exit) when the supervising parent is gone, rather than run orphaned."""
    parent = os.getppid()

    def _watch() -> None:
        while not stop.wait(interval_s):
            if os.getppid() != parent:
                log.warning("supervising process %d is gone: stopping", parent)
                stop.set()
                return

    threading.Thread(target=_watch, name="watch-parent", daemon=True).start()
