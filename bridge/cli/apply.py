"""``bridge-apply``: run beside the target table (or tables: ``pipelines:``, docs/pipelines.md)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import click
import orjson

from bridge import config
from bridge.cli.common import handled, setup_logging, stop_on_signals
from bridge.cli.observing import observing
from bridge.cli.options import settings_options
from bridge.cli.pipelines import run_many, without_port
from bridge.cli.processes import resolve, supervise, watch_parent
from bridge.errors import ConfigError, DeadLetteredError
from bridge.observe import Health
from bridge.wiring import build_applier

log = logging.getLogger("bridge.apply")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--pipeline",
    "pipeline",
    multiple=True,
    help="run only this pipeline of the config's pipelines: (repeatable; default: all)",
)
# Set by the --processes supervisor for each child it starts (bridge/cli/processes.py), not by people.
@click.option("--child-index", "child_index", type=int, hidden=True)
@settings_options(config.ApplyConfig)
@handled
def main(config_file: str | None, pipeline: tuple[str, ...], child_index: int | None, **flags: Any) -> None:
    """Verify, decode and apply replicated changes to the target table, last writer wins."""
    pipelines = config.load_pipelines(config.ApplyConfig, config_file, flags, select=pipeline)
    first = pipelines[0].cfg
    processes = resolve(first.processes)
    if processes > 1 and pipelines[0].listed:
        raise ConfigError(
            "processes > 1 runs one table per process group; with pipelines: set processes: 1 (or run one"
            " bridge-apply per pipeline)"
        )
    setup_logging(first.log_level, first.log_json)
    stop = stop_on_signals()
    if processes > 1:
        metrics = (first.metrics_host, first.metrics_port) if first.metrics_port is not None else None
        code = supervise(processes, sys.argv[1:], stop, metrics=metrics)
        if code:
            sys.exit(code)
        return
    if child_index is not None:
        watch_parent(stop)
        pipelines = [as_child(pipelines[0], child_index)]
    if len(pipelines) == 1 and not pipelines[0].listed:
        click.echo(orjson.dumps(apply_one(pipelines[0], stop, lambda _: None)).decode())
        return
    run_many(pipelines, lambda p, s, on_built: apply_one(p, s, on_built, serve=False), stop)


def as_child(pipeline: config.Pipeline[config.ApplyConfig], index: int) -> config.Pipeline[config.ApplyConfig]:
    """Child ``index`` of a --processes group (its metrics port comes as a flag from the parent): only
    child 0 keeps the status file (the children share the queue, so one child's last change and lag
    stand for the group's, and N writers of one file would only take turns)."""
    if index == 0:
        return pipeline
    return pipeline.model_copy(update={"cfg": pipeline.cfg.model_copy(update={"status_file": None})})


def apply_one(
    pipeline: config.Pipeline[config.ApplyConfig],
    stop: threading.Event,
    on_built: Callable[[Health], None],
    *,
    serve: bool = True,
) -> dict[str, Any]:
    """One pipeline, start to stop: what a one-table process does, and each thread of a many-table one."""
    cfg = pipeline.cfg
    applier = build_applier(cfg, stop, name=pipeline.name if pipeline.listed else None)
    on_built(applier.health)
    log.info(
        "applying to %s from %s%s",
        cfg.target_table,
        applier.source.transport.url.redacted(),
        f" (pipeline {pipeline.name})" if pipeline.listed else "",
    )
    replica = cfg.origin or cfg.target_region
    try:
        with observing(cfg if serve else without_port(cfg), applier.health, "apply", cfg.target_table, replica):
            stats = applier.run(until_idle=cfg.until_idle)
    finally:
        applier.close()
    log.info("stopped%s: %s", f" {pipeline.name}" if pipeline.listed else "", orjson.dumps(stats.as_dict()).decode())
    summary = {"apply": stats.as_dict(), "echo_received": applier.target.echoes}
    if cfg.until_idle is not None and (stats.parked or stats.quarantined):
        # A drain that left work for an operator must not look like a clean one to a script.
        click.echo(orjson.dumps(summary).decode())
        raise DeadLetteredError(
            f"{stats.parked} change(s) parked and {stats.quarantined} envelope(s) quarantined in this run;"
            " see `bridge dlq list`"
        )
    return summary


if __name__ == "__main__":
    main()
