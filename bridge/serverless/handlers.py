"""The two Lambda entry points and what a container keeps between invocations.

Settings come from the ``BRIDGE_*`` environment, validated on the first invocation of a container
(a cold start) by the same models as the daemons'. A bad setting is logged as one ERROR line naming
it and raised on every invocation after, without being read again: the environment cannot change
under a running container. Clients, keys, the target table and the transport connections are built
once and reused; the cold start's init time is logged once (docs/serverless.md: how to measure it).

Every invocation ends by writing the bridge's metrics as CloudWatch EMF lines to stdout (Lambda sends
stdout to CloudWatch Logs, which turns them into metrics: no PutMetricData), and runs under a
deadline: shortly before Lambda's timeout the stop event is set, so retry loops give up in time to
return a partial batch response instead of being killed mid-batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from bridge.config import ApplyConfig, PublishConfig, load
from bridge.errors import BridgeError, ConfigError, KeyFileError
from bridge.observe.emf import EmfWriter
from bridge.serverless.apply import ApplyFunction
from bridge.serverless.publish import PublishFunction

log = logging.getLogger("bridge.serverless")
F = TypeVar("F", PublishFunction, ApplyFunction)

#: Seconds kept back from Lambda's timeout to answer (at most this, at least a fifth of the time left).
DEADLINE_MARGIN_S = 10.0

_stop = threading.Event()
_built: dict[str, Any] = {}  # "publish" / "apply" -> (function, EMF writer)
_config_error: dict[str, ConfigError | KeyFileError] = {}


def publish_handler(event: Any, context: Any) -> dict[str, Any]:
    """DynamoDB Streams event -> transport; returns the partial batch response."""
    function, emf = _container("publish", PublishConfig, PublishFunction)
    with _deadline(context), _metrics(emf):
        return function.handle(event)


def apply_handler(event: Any, context: Any) -> dict[str, Any]:
    """Kinesis or SQS event of envelopes -> target table; returns the partial batch response."""
    function, emf = _container("apply", ApplyConfig, ApplyFunction)
    with _deadline(context), _metrics(emf):
        return function.handle(event)


def _container(
    role: str, model: type[PublishConfig] | type[ApplyConfig], build: Callable[[Any, threading.Event], F]
) -> tuple[F, EmfWriter]:
    if role in _built:
        return _built[role]  # type: ignore[no-any-return]
    if role in _config_error:
        raise _config_error[role]
    started = time.perf_counter()
    try:
        cfg = load(model, None, {}, dict(os.environ))
        logging.getLogger("bridge").setLevel(cfg.log_level)
        function = build(cfg, _stop)
    except (ConfigError, KeyFileError) as exc:
        log.error("%s function not configured: %s", role, exc)  # one line, naming the setting
        _config_error[role] = exc
        raise
    except BridgeError as exc:  # e.g. SSM throttled, table unreachable: the next invocation tries again
        log.error("%s function could not start: %s", role, exc)
        raise
    table = cfg.source_table if isinstance(cfg, PublishConfig) else cfg.target_table
    replica = cfg.origin_id if isinstance(cfg, PublishConfig) else (cfg.origin or cfg.target_region)
    _built[role] = (function, EmfWriter(table, replica))
    log.info("%s function ready: init %.0f ms (after imports)", role, (time.perf_counter() - started) * 1000)
    return _built[role]  # type: ignore[no-any-return]


@contextmanager
def _deadline(context: Any) -> Iterator[None]:
    _stop.clear()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    timer = None
    if callable(remaining):
        left = remaining() / 1000
        timer = threading.Timer(max(0.0, left - min(DEADLINE_MARGIN_S, left / 5)), _stop.set)
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


@contextmanager
def _metrics(emf: EmfWriter) -> Iterator[None]:
    try:
        yield
    finally:
        try:
            emf.flush()
        except (OSError, ValueError) as exc:  # metrics must never fail a batch
            log.warning("could not write EMF metrics: %s", exc)


def reset() -> None:
    """Forget what this container built (tests: a new "cold start" with other settings)."""
    for function, emf in _built.values():
        emf.close()
        if isinstance(function, PublishFunction):
            function.publisher.close()
        else:
            function.applier.changes.shutdown()
            function.parker.close()
    _built.clear()
    _config_error.clear()
