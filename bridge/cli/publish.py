"""``bridge-publish``: run beside the source table."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import click
import orjson

from bridge import config
from bridge.cli.common import aws_side_options, common_options, handled, setup_logging, stop_on_signals
from bridge.copy.bootstrap import run_alongside
from bridge.wiring import build_bootstrap, build_publisher

log = logging.getLogger("bridge.publish.loop")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--source-table", help="table whose stream is replicated")
@click.option("--source-region", help="region of the source table")
@click.option("--source-endpoint", help="endpoint URL override (emulators, VPC endpoints)")
@click.option("--source-profile", help="AWS profile for the source side")
@aws_side_options("source")
@click.option("--origin", help="this replica's name in versions (default: source region)")
@click.option("--timestamp-attribute", help="application attribute holding the write time")
@click.option("--signing-key", help="Ed25519 private key (bridge keygen)")
@click.option("--checkpoint", help="SQLite path or dynamodb://TABLE")
@click.option("--start-position", type=click.Choice(["trim-horizon", "latest"]))
@click.option(
    "--on-trimmed",
    type=click.Choice(["fail", "trim-horizon"]),
    help="when records were trimmed before being read: stop (default) or go on from the oldest",
)
@click.option("--compression", type=click.Choice(["zstd", "zlib", "none"]))
@click.option("--batch-max-changes", type=int)
@click.option("--batch-max-bytes", type=int)
@click.option("--batch-max-wait", type=float, help="seconds a change may wait for its batch to fill")
@click.option("--ttl-deletes", type=click.Choice(["replicate", "ignore"]), help="deletes made by DynamoDB TTL")
@click.option(
    "--active-active/--one-way",
    default=None,
    help="the source table is also written by bridge-apply (two-way replication)",
)
@click.option("--attribute-prefix", help="active-active: bridge-apply's attribute prefix on this table")
@click.option("--tombstone-table", help="active-active: bridge-apply's tombstone table for this table")
@click.option(
    "--bootstrap/--no-bootstrap",
    default=None,
    help="first copy the items the table holds (resumable parallel scan), then go on with the stream",
)
@click.option("--bootstrap-force", is_flag=True, default=None, help="copy again although a bootstrap completed")
@click.option("--bootstrap-segments", type=int, help="parallel scan segments (default 8)")
@click.option("--bootstrap-rcu", type=float, help="read capacity units per second the copy may use (default: no limit)")
@click.option("--bootstrap-page-items", type=int, help="items per scan page (default: DynamoDB's 1 MB pages)")
@click.option(
    "--reset-checkpoint",
    is_flag=True,
    help="start over: move the checkpoint file aside (kept as FILE.reset-TIME) and start at --start-position",
)
@common_options
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


if __name__ == "__main__":
    main()
