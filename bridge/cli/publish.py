"""``bridge-publish``: run beside the source table."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import click
import orjson

from bridge import config
from bridge.cli.common import handled, setup_logging, stop_on_signals
from bridge.cli.observing import observing
from bridge.cli.options import settings_options
from bridge.copy.bootstrap import run_alongside
from bridge.errors import DeadLetteredError
from bridge.wiring import build_bootstrap, build_publisher

log = logging.getLogger("bridge.publish.loop")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--reset-checkpoint",
    is_flag=True,
    help="start over: move the checkpoint file aside (kept as FILE.reset-TIME) and start at --start-position",
)
@settings_options(config.PublishConfig)
@handled
def main(config_file: str | None, reset_checkpoint: bool, **flags: Any) -> None:
    """Read the source table's stream and ship signed, compressed batches to the transport."""
    cfg = config.load(config.PublishConfig, config_file, flags)
    setup_logging(cfg.log_level, cfg.log_json)
    stop = stop_on_signals()
    if cfg.bootstrap:
        publisher, bootstrap = build_bootstrap(cfg, stop, reset_checkpoint=reset_checkpoint)
    else:
        publisher, bootstrap = build_publisher(cfg, stop, reset_checkpoint=reset_checkpoint), None
    log.info(
        "publishing %s (origin %s) to %s",
        cfg.source_table,
        cfg.origin_id,
        publisher.sender.transport.transport.url.redacted(),
    )
    try:
        with observing(cfg, publisher.health, "publish", cfg.source_table, cfg.origin_id):
            if bootstrap is None:
                stats = publisher.run(until_idle=cfg.until_idle)
            else:
                stats, _ = run_alongside(publisher, bootstrap, cfg.until_idle, stop)
    finally:
        publisher.close()
    log.info("stopped: %s", orjson.dumps(stats.as_dict()).decode())
    summary: dict[str, object] = {"publish": stats.as_dict()}
    if bootstrap is not None:
        summary["bootstrap"] = bootstrap.stats.as_dict()
    if publisher.guard is not None:
        summary["active_active"] = asdict(publisher.guard.stats)
    click.echo(orjson.dumps(summary).decode())
    parked = stats.bad_records + stats.oversize
    if cfg.until_idle is not None and parked:
        # A drain that left work for an operator must not look like a clean one to a script.
        raise DeadLetteredError(f"{parked} record(s) or change(s) parked in this run; see `bridge dlq list`")


if __name__ == "__main__":
    main()
