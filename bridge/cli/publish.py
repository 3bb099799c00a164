"""``bridge-publish``: run beside the source table (or tables: ``pipelines:``, docs/pipelines.md)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click
import orjson

from bridge import config
from bridge.cli.common import handled, setup_logging, stop_on_signals
from bridge.cli.observing import observing
from bridge.cli.options import settings_options
from bridge.cli.pipelines import run_many, without_port
from bridge.copy.bootstrap import run_alongside
from bridge.errors import ConfigError, DeadLetteredError
from bridge.observe import Health
from bridge.wiring import build_bootstrap, build_publisher, expand_pipelines

log = logging.getLogger("bridge.publish.loop")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--reset-checkpoint",
    is_flag=True,
    help="start over: move the checkpoint file aside (kept as FILE.reset-TIME) and start at --start-position",
)
@click.option(
    "--pipeline",
    "pipeline",
    multiple=True,
    help="run only this pipeline of the config's pipelines: (repeatable; default: all)",
)
@settings_options(config.PublishConfig)
@handled
def main(config_file: str | None, reset_checkpoint: bool, pipeline: tuple[str, ...], **flags: Any) -> None:
    """Read the source table's stream and ship signed, compressed batches to the transport."""
    pipelines = config.load_pipelines(config.PublishConfig, config_file, flags, select=pipeline)
    first = pipelines[0].cfg
    setup_logging(first.log_level, first.log_json)
    stop = stop_on_signals()
    if len(pipelines) == 1 and not pipelines[0].listed:
        click.echo(orjson.dumps(publish_one(pipelines[0], stop, lambda _: None, reset=reset_checkpoint)).decode())
        return
    if reset_checkpoint:
        reset_stores(config.load_pipelines(config.PublishConfig, config_file, flags), pipelines)
    pipelines = expand_pipelines(pipelines)
    if not pipelines:
        raise ConfigError("no pipeline to run: source_tables matched no table")
    run_many(pipelines, lambda p, s, on_built: publish_one(p, s, on_built, serve=False), stop)


def publish_one(
    pipeline: config.Pipeline[config.PublishConfig],
    stop: threading.Event,
    on_built: Callable[[Health], None],
    *,
    reset: bool = False,
    serve: bool = True,
) -> dict[str, Any]:
    """One pipeline, start to stop: what a one-table process does, and each thread of a many-table one."""
    cfg = pipeline.cfg
    namespace = pipeline.name if pipeline.listed else None
    if cfg.bootstrap:
        publisher, bootstrap = build_bootstrap(cfg, stop, reset_checkpoint=reset, namespace=namespace)
    else:
        publisher, bootstrap = build_publisher(cfg, stop, reset_checkpoint=reset, namespace=namespace), None
    on_built(publisher.health)
    log.info(
        "publishing %s (origin %s) to %s%s",
        cfg.source_table,
        cfg.origin_id,
        publisher.sender.transport.transport.url.redacted(),
        f" (pipeline {pipeline.name})" if pipeline.listed else "",
    )
    try:
        with observing(
            cfg if serve else without_port(cfg), publisher.health, "publish", cfg.source_table, cfg.origin_id
        ):
            if bootstrap is None:
                stats = publisher.run(until_idle=cfg.until_idle)
            else:
                stats, _ = run_alongside(publisher, bootstrap, cfg.until_idle, stop)
    finally:
        publisher.close()
    log.info("stopped%s: %s", f" {pipeline.name}" if pipeline.listed else "", orjson.dumps(stats.as_dict()).decode())
    summary: dict[str, object] = {"publish": stats.as_dict()}
    if bootstrap is not None:
        summary["bootstrap"] = bootstrap.stats.as_dict()
    if publisher.guard is not None:
        summary["active_active"] = asdict(publisher.guard.stats)
    parked = stats.bad_records + stats.oversize
    if cfg.until_idle is not None and parked:
        # A drain that left work for an operator must not look like a clean one to a script.
        click.echo(orjson.dumps(summary).decode())
        raise DeadLetteredError(f"{parked} record(s) or change(s) parked in this run; see `bridge dlq list`")
    return summary


def reset_stores(
    everything: list[config.Pipeline[config.PublishConfig]], chosen: list[config.Pipeline[config.PublishConfig]]
) -> None:
    """--reset-checkpoint with pipelines: each checkpoint file moved aside once, and only if every
    pipeline keeping positions in it is being reset (a file holds all of its pipelines' positions)."""
    from bridge.state.checkpoints import open_checkpoint_store

    chosen_names = {p.name for p in chosen}
    for spec in sorted({p.cfg.checkpoint for p in chosen}):
        others = sorted(p.name for p in everything if p.cfg.checkpoint == spec and p.name not in chosen_names)
        if others:
            raise ConfigError(
                f"--reset-checkpoint: {spec} also holds the checkpoints of {', '.join(others)}; reset them too"
                " (no --pipeline), or give this pipeline a checkpoint of its own"
            )
        open_checkpoint_store(spec, reset=True).close()


if __name__ == "__main__":
    main()
