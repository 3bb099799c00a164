"""``bridge-apply``: run beside the target table."""

from __future__ import annotations

import logging
from typing import Any

import click
import orjson

from bridge import config
from bridge.cli.common import aws_side_options, common_options, handled, setup_logging, stop_on_signals
from bridge.wiring import build_applier

log = logging.getLogger("bridge.apply")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--target-table", help="table the changes are applied to")
@click.option("--target-region", help="region of the target table")
@click.option("--target-endpoint", help="endpoint URL override (emulators, VPC endpoints)")
@click.option("--target-profile", help="AWS profile for the target side")
@aws_side_options("target")
@click.option("--trusted-keys", type=click.Path(), help="public key file or directory of *.pub keys")
@click.option("--attribute-prefix", help="prefix of bridge-owned attributes (default _bridge)")
@click.option("--tombstone-table", help="companion table for delete tombstones")
@click.option("--tombstone-ttl-days", type=float)
@click.option("--create/--no-create", default=None, help="create the tombstone table if missing (default on)")
@click.option("--origin", help="this replica's origin name (default: target region), to count echo traffic")
@click.option("--workers", type=int, help="parallel writers (changes to one key stay in order)")
@click.option(
    "--batch-messages",
    "--prefetch",
    "batch_messages",
    type=int,
    help="messages taken per receive and applied as one batch (default 16; --prefetch: old name)",
)
@click.option("--accept-tables", help="signed source tables to apply, comma-separated (default: the target table)")
@click.option("--accept-origins", help="signed origins to apply, comma-separated (default: * any)")
@click.option("--transient-retries", type=int, help="in-place retries of a throttled or timed-out write (default 4)")
@click.option("--retry-max-attempts", type=int, help="attempts before a failing change is parked (default 20)")
@click.option("--retry-max-age", type=float, help="seconds after its first failure a change is parked (default 86400)")
@click.option("--retry-initial-delay", type=float, help="seconds before the first re-attempt from the DLQ (default 10)")
@click.option("--retry-max-delay", type=float, help="longest wait between two re-attempts, seconds (default 900)")
@common_options
@handled
def main(config_file: str | None, **flags: Any) -> None:
    """Verify, decode and apply replicated changes to the target table, last writer wins."""
    cfg = config.load(config.ApplyConfig, config_file, flags)
    setup_logging(cfg.log_level, cfg.log_json)
    stop = stop_on_signals()
    applier = build_applier(cfg, stop)
    log.info("applying to %s from %s", cfg.target_table, applier.source.transport.url.redacted())
    try:
        stats = applier.run(until_idle=cfg.until_idle)
    finally:
        applier.close()
    log.info("stopped: %s", orjson.dumps(stats.as_dict()).decode())
    click.echo(orjson.dumps({"apply": stats.as_dict(), "echo_received": applier.target.echoes}).decode())


if __name__ == "__main__":
    main()
