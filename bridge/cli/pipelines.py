"""Many pipelines in one bridge-publish or bridge-apply process: one thread each, failures kept apart.

Each pipeline runs the same code a one-table process runs (``run_one``: build, observe, run, close).
A pipeline that fails (its table missing, its transport refusing, paused past ``max_paused``) is
logged with its name, shown as failed in ``/readyz``, and started again after a backoff (1 s doubling
to 60 s) while the others go on; with ``until_idle`` it is not retried and the process exits with its
error's code once the others drained. SIGTERM sets the one stop event every pipeline watches, so each
finishes its in-flight work and checkpoints. One metrics port serves every pipeline (``HealthSet``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import orjson

from bridge.config import ApplyConfig, Pipeline, PublishConfig
from bridge.errors import BridgeError, ConfigError, PausedTooLongError
from bridge.observe import Health
from bridge.observe.health import HealthSet
from bridge.observe.server import MetricsServer

log = logging.getLogger("bridge.pipelines")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0

# Builds and runs one pipeline until stopped (or idle); calls back with its Health once built; returns
# its summary. Raises what stopped it.
RunOne = Callable[[Pipeline[Any], threading.Event, Callable[[Health], None]], dict[str, Any]]


@dataclass
class Outcome:
    name: str
    summary: dict[str, Any] | None = None
    error: BaseException | None = None
    failures: int = 0  # how many times it failed and was started again
    done: threading.Event = field(default_factory=threading.Event)


def run_pipelines(
    pipelines: list[Pipeline[Any]],
    run_one: RunOne,
    stop: threading.Event,
    *,
    until_idle: float | None,
    metrics: tuple[str, int] | None,
    retry_first_s: float = RETRY_FIRST_S,
) -> list[Outcome]:
    """Run every pipeline in its own thread until ``stop`` (or, with ``until_idle``, until each drained)."""
    health = HealthSet()
    health.expect([p.name for p in pipelines])
    server = MetricsServer(health, metrics[0], metrics[1]) if metrics is not None else None
    if server is not None:
        log.info("metrics on %s/metrics, probes on /healthz and /readyz (?pipeline=NAME)", server.url)
    outcomes = [Outcome(p.name) for p in pipelines]
    threads = []
    for pipeline, outcome in zip(pipelines, outcomes, strict=True):

        def body(pipeline: Pipeline[Any] = pipeline, outcome: Outcome = outcome) -> None:
            try:
                _supervise(pipeline, outcome, run_one, stop, health, until_idle, retry_first_s)
            finally:
                outcome.done.set()

        thread = threading.Thread(target=body, name=f"pipeline-{pipeline.name}", daemon=True)
        thread.start()
        threads.append(thread)
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    finally:
        if server is not None:
            server.close()
    return outcomes


def run_many(pipelines: list[Pipeline[Any]], run_one: RunOne, stop: threading.Event) -> None:
    """A many-pipeline bridge-publish or bridge-apply, start to end: every pipeline run in its own
    thread, one JSON summary line printed (each pipeline's totals or its error), then the process's
    error raised, if any (its exit code)."""
    log.info("running %d pipelines: %s", len(pipelines), ", ".join(p.name for p in pipelines))
    outcomes = run_pipelines(
        pipelines, run_one, stop, until_idle=pipelines[0].cfg.until_idle, metrics=metrics_address(pipelines)
    )
    summary = {o.name: o.summary if o.error is None else {"error": str(o.error)} for o in outcomes}
    click.echo(orjson.dumps({"pipelines": summary}).decode())
    error = first_error(outcomes)
    if error is not None:
        raise error


def _supervise(
    pipeline: Pipeline[Any],
    outcome: Outcome,
    run_one: RunOne,
    stop: threading.Event,
    health: HealthSet,
    until_idle: float | None,
    retry_first_s: float,
) -> None:
    delay = retry_first_s
    while not stop.is_set():
        try:
            outcome.summary = run_one(pipeline, stop, lambda h: health.add(pipeline.name, h))
            outcome.error = None
            return
        except Exception as exc:
            outcome.error = exc
            outcome.failures += 1
            reason = str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
            health.failed(pipeline.name, reason)
            if until_idle is not None:
                log.error("pipeline %s failed: %s", pipeline.name, reason)
                return
            log.error("pipeline %s failed: %s; starting it again in %.0f s", pipeline.name, reason, delay)
            if not isinstance(exc, BridgeError):
                log.debug("pipeline %s: traceback", pipeline.name, exc_info=exc)
        stop.wait(delay)
        delay = min(delay * 2, RETRY_MAX_S)


def metrics_address(pipelines: list[Pipeline[Any]]) -> tuple[str, int] | None:
    """The one metrics port of the process: a per-pipeline override would need a second one."""
    ports = {(p.cfg.metrics_host, p.cfg.metrics_port) for p in pipelines}
    if len(ports) > 1:
        raise ConfigError("metrics_port and metrics_host are per process: set them at the top level, not per pipeline")
    host, port = next(iter(ports))
    return None if port is None else (host, port)


def first_error(outcomes: list[Outcome]) -> BaseException | None:
    """What the process exits with: a pipeline's error (a BridgeError keeps its exit code)."""
    errors = [o.error for o in outcomes if o.error is not None]
    # Paused too long first: it is the one a supervisor is told to act on (exit 9).
    errors.sort(key=lambda e: not isinstance(e, PausedTooLongError))
    return errors[0] if errors else None


def without_port(cfg: PublishConfig | ApplyConfig) -> Any:
    """A pipeline's config for its own observers: the process serves the port, not each pipeline."""
    return cfg.model_copy(update={"metrics_port": None})
