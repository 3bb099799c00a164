"""What every command shares: logging, signals, and one-line handled errors."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import click
import orjson

from bridge.errors import BridgeError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("bridge")


def handled(fn: F) -> F:
    """A BridgeError becomes one line on stderr and its own exit code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BridgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            # ISO-8601 with the zone, in UTC: log shippers parse it without guessing the host's zone.
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


#: ``--log-level`` of the admin commands (the daemons' comes from their settings), quiet by default.
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
)


def setup_logging(level: str, json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Third-party debug logs can carry request bodies (item contents): keep them quiet.
    for noisy in ("botocore", "boto3", "urllib3", "amqp", "kombu"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT ask the loop to finish in-flight work, checkpoint and exit."""
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def aws_side_options(side: str, shared: bool = True) -> Callable[[F], F]:
    """The flags saying how to reach AWS for one side (``source`` or ``target``); ``shared``: with the
    ``--aws-*`` timeouts both sides share (a command taking both sides adds those once)."""
    options = [
        click.option(f"--{side}-role-arn", help=f"IAM role to assume (STS) for the {side} side"),
        click.option(f"--{side}-external-id", help=f"external id for assuming --{side}-role-arn"),
        click.option(f"--{side}-proxy", help=f"HTTP(S) proxy URL for the {side} side's AWS calls"),
        click.option(f"--{side}-ssm-access-key-param", help=f"SSM parameter holding the {side} side's access key id"),
        click.option(f"--{side}-ssm-secret-key-param", help=f"SSM parameter holding the {side} side's secret key"),
        click.option(
            f"--{side}-ssm-region", help="region of those SSM parameters (read with this machine's credentials)"
        ),
        click.option("--aws-connect-timeout", type=float, help="seconds to connect to an AWS endpoint (default 5)"),
        click.option("--aws-read-timeout", type=float, help="seconds to wait for an AWS response (default 30)"),
        click.option("--aws-max-attempts", type=int, help="attempts per AWS call, adaptive retry mode (default 10)"),
    ]
    if not shared:
        options = options[:-3]

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
