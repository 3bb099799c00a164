"""What both daemons start beside their loop: the metrics port, EMF lines, the minute log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.config import ApplyConfig, PublishConfig
from bridge.observe import Health
from bridge.observe.emf import EmfReporter, EmfWriter
from bridge.observe.metrics import READY
from bridge.observe.report import MinuteLog
from bridge.observe.server import MetricsServer
from bridge.observe.statefile import StatusFile

log = logging.getLogger("bridge.observe")


@contextmanager
def observing(
    cfg: PublishConfig | ApplyConfig, health: Health, side: str, table: str, replica: str
) -> Iterator[MetricsServer | None]:
    """Runs the exporters the config asks for while the body runs; the minute log line always."""
    READY.add(health.ready)  # bridge_ready, for /metrics and EMF alike
    server = None
    if cfg.metrics_port is not None:
        server = MetricsServer(health, cfg.metrics_host, cfg.metrics_port)
        log.info("metrics on %s/metrics, probes on /healthz and /readyz", server.url)
    emf = EmfReporter(EmfWriter(table, replica), cfg.metrics_interval) if cfg.metrics == "emf" else None
    minute = MinuteLog(side, table).start()
    status = getattr(cfg, "status_file", None)
    status_file = StatusFile(status, table).start() if status is not None else None
    try:
        yield server
    finally:
        minute.close()
        if status_file is not None:
            status_file.close()
        if emf is not None:
            emf.close()
        if server is not None:
            server.close()
        READY.remove(health.ready)
