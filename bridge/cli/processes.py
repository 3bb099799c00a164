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

Metrics: with ``metrics_port`` P the parent serves the group on P (:class:`GroupEndpoint`) and child
``i`` serves its own on a port the parent gives it (P + 1 + i; with P = 0, free ports). The parent's
``/metrics`` is every child's figures, each sample labelled ``process="i"`` (sum them in PromQL);
``/healthz`` and ``/readyz`` answer 200 only when every child does. Chosen over prometheus-client's
multiprocess mode, which cannot carry the exporter's custom collectors (readiness, last applied).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from bridge.observe.server import PlainHandler

log = logging.getLogger("bridge.processes")

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
# A crash that repeats this often is not a flake: stop the line (exit 1) rather than spin forever.
CRASH_WINDOW_S = 60.0
CRASH_LIMIT = 10
FETCH_TIMEOUT_S = 2.0  # the group endpoint's wait for one child's answer


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
    processes: int,
    argv: list[str],
    stop: threading.Event,
    *,
    metrics: tuple[str, int] | None = None,
    poll_s: float = 0.2,
    module: str = "bridge.cli.apply",
) -> int:
    """Run ``processes`` children of ``module`` with ``argv`` until stopped or all done; the group's exit code.
    ``metrics``: (host, port) of the group's endpoint, or ``None``."""
    children = [Child(i) for i in range(processes)]
    code = 0
    log.info("starting %d consumer processes", processes)
    endpoint = GroupEndpoint(metrics[0], metrics[1], processes) if metrics is not None else None
    ports = endpoint.child_ports if endpoint is not None else None
    if endpoint is not None:
        log.info("group metrics on %s/metrics, probes on /healthz and /readyz", endpoint.url)
    try:
        while not stop.is_set():
            now = time.monotonic()
            for child in children:
                if child.done:
                    continue
                if child.proc is None:
                    if now >= child.restart_at:
                        extra = ["--metrics-port", str(ports[child.index])] if ports is not None else []
                        child.proc = _start(module, [*argv, *extra], child.index)
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
        if endpoint is not None:
            endpoint.close()
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


class GroupEndpoint:
    """The group's ``/metrics``, ``/healthz`` and ``/readyz``, gathered from the children's own ports."""

    def __init__(self, host: str, port: int, processes: int) -> None:
        self.host = host
        self.child_ports = [port + 1 + i for i in range(processes)] if port else _free_ports(host, processes)
        handler = type("_GroupHandler", (_GroupHandler,), {"group": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="group-metrics-http", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fetch(self, path: str) -> list[tuple[int, int, str]]:
        """(index, status, body) of ``path`` on every child, asked at once (a probe's deadline is short,
        and one hung child must not delay the others' answers); status 0 when it does not answer."""
        with ThreadPoolExecutor(max_workers=len(self.child_ports)) as pool:
            return list(pool.map(lambda i: self._one(i, path), range(len(self.child_ports))))

    def _one(self, index: int, path: str) -> tuple[int, int, str]:
        url = f"http://{self.host}:{self.child_ports[index]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
                return index, int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return index, exc.code, exc.read().decode()
        except OSError:
            return index, 0, "not answering (starting, restarting or hung)\n"

    def metrics(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Labelled([(i, body) for i, status, body in self.fetch("/metrics") if status == 200]))
        return generate_latest(registry)


class _Labelled:
    """A collector of the children's parsed figures, each sample with its child's ``process`` label."""

    def __init__(self, bodies: list[tuple[int, str]]) -> None:
        self.bodies = bodies

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, body in self.bodies:
            for family in text_string_to_metric_families(body):
                metric = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    metric.add_sample(sample.name, {**sample.labels, "process": str(index)}, sample.value)
        yield from merged.values()


class _GroupHandler(PlainHandler):
    group: GroupEndpoint

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            self._send(200, self.group.metrics(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            answers = self.group.fetch(path)
            bad = [f"process {i}: {body.strip()}" for i, status, body in answers if status != 200]
            text = "; ".join(bad) if bad else f"all {len(answers)} processes ok"
            self._send(503 if bad else 200, f"{text}\n".encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")


def _free_ports(host: str, n: int) -> list[int]:
    """``n`` ports free now (port 0 asked for "any"): each child binds its own again at start."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()
