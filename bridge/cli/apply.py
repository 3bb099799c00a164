"""``bridge-apply``: run beside the target table."""

from __future__ import annotations

import logging
from typing import Any

import click
import orjson

from bridge import config
from bridge.cli.common import handled, setup_logging, stop_on_signals
from bridge.cli.observing import observing
from bridge.cli.options import settings_options
from bridge.errors import DeadLetteredError
from bridge.wiring import build_applier

log = logging.getLogger("bridge.apply")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@settings_options(config.ApplyConfig)
@handled
def main(config_file: str | None, **flags: Any) -> None:
    """Verify, decode and apply replicated changes to the target table, last writer wins."""
    cfg = config.load(config.ApplyConfig, config_file, flags)
    setup_logging(cfg.log_level, cfg.log_json)
    stop = stop_on_signals()
    applier = build_applier(cfg, stop)
    log.info("applying to %s from %s", cfg.target_table, applier.source.transport.url.redacted())
    replica = cfg.origin or cfg.target_region
    try:
        with observing(cfg, applier.health, "apply", cfg.target_table, replica):
            stats = applier.run(until_idle=cfg.until_idle)
    finally:
        applier.close()
    log.info("stopped: %s", orjson.dumps(stats.as_dict()).decode())
    click.echo(orjson.dumps({"apply": stats.as_dict(), "echo_received": applier.target.echoes}).decode())
    if cfg.until_idle is not None and (stats.parked or stats.quarantined):
        # A drain that left work for an operator must not look like a clean one to a script.
        raise DeadLetteredError(
            f"{stats.parked} change(s) parked and {stats.quarantined} envelope(s) quarantined in this run;"
            " see `bridge dlq list`"
        )


if __name__ == "__main__":
    main()
