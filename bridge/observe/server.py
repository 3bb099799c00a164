"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, for Prometheus and orchestrators' probes.

prometheus-client's own ``start_http_server`` serves only metrics; the probes need the process's
:class:`~bridge.observe.health.Health`, so this is a small ``http.server`` of our own, in a daemon
thread, bound to loopback unless told otherwise (the metrics name tables; no reason to publish them).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.observe.health import Health, HealthSet
from bridge.observe.metrics import REGISTRY

log = logging.getLogger(__name__)


class MetricsServer:
    """Serves until :meth:`close`. ``port`` 0 picks a free port (see :attr:`port`)."""

    def __init__(self, health: Health | HealthSet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.health = health
        handler = type("_Handler", (_Handler,), {"health": health})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PlainHandler(BaseHTTPRequestHandler):
    """What every probe endpoint of the bridge answers with: a body and its type; requests logged at
    DEBUG only (a scrape every few seconds is not news)."""

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class _Handler(PlainHandler):
    health: Health | HealthSet

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        pipeline = parse_qs(query).get("pipeline")
        if path == "/readyz" and pipeline and isinstance(self.health, HealthSet):
            # One pipeline of many: its own readiness (an orchestrator may watch each).
            if pipeline[0] not in self.health.names():
                self._send(404, f"no pipeline {pipeline[0]}\n".encode())
                return
            ok, reason = self.health.ready_of(pipeline[0])
            self._send(200 if ok else 503, f"{reason}\n".encode())
            return
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = self.health.alive()
            self._send(200 if ok else 503, f"{reason}\n".encode())
        elif path == "/readyz":
            ok, reason = self.health.ready()
            self._send(200 if ok else 503, f"{reason}\n".encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")
