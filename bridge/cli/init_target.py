"""``bridge init-target``: create each missing target table from its source's description.

Given bridge-publish's config (the source side) and bridge-apply's (the target side), for every
pipeline pair: a missing target is created to match the source (``bridge.copy.schema``); an existing
one is never changed, but each difference with its source is reported. Exit 8 when a difference
breaks replication (another key schema; active-active without a NEW_AND_OLD_IMAGES stream).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from bridge import config
from bridge.cli.common import handled, log_level_option, setup_logging
from bridge.copy.schema import Schema, compare_schemas, create_request, create_target, describe_schema
from bridge.copy.verify import DIFFERENT_EXIT
from bridge.errors import ConfigError


@click.command("init-target")
@click.option(
    "--config",
    "config_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="bridge-publish's config (the sources) and bridge-apply's (the targets); one table each or pipelines",
)
@click.option("--pipeline", "pipelines", multiple=True, help="only this pipeline (repeatable; default: all)")
@click.option("--dry-run", is_flag=True, help="say what would be created; create nothing")
@log_level_option
@handled
def init_target(config_files: tuple[str, ...], pipelines: tuple[str, ...], dry_run: bool, log_level: str) -> None:
    """Create each missing target table like its source (keys, indexes, capacity, TTL, stream, class,
    deletion protection, tags); report how existing ones differ. Exit 8 if a difference breaks replication."""
    from bridge.wiring import aws_side, expand_pipelines

    setup_logging(log_level.upper())
    sources, targets = _load(config_files, pipelines)
    sources = expand_pipelines(sources)
    breaking = 0
    for target, source in pair(sources, targets):
        src_cfg, dst_cfg = source.cfg, target.cfg
        src = describe_schema(aws_side(src_cfg, "source").client("dynamodb"), src_cfg.source_table)
        if src is None:
            raise ConfigError(f"source table {src_cfg.source_table!r} does not exist")
        client = aws_side(dst_cfg, "target").client("dynamodb")
        dst = describe_schema(client, dst_cfg.target_table, "target")
        where = f"{dst_cfg.target_table} ({dst_cfg.target_region})"
        if dst is None:
            summary = _summary(src, src_cfg.active_active)
            if dry_run:
                click.echo(f"would create {where} from {src_cfg.source_table}: {summary}")
                continue
            skipped = create_target(client, src, dst_cfg.target_table, active_active=src_cfg.active_active)
            click.echo(f"created {where} from {src_cfg.source_table}: {summary}")
            for line in skipped:
                click.echo(f"  {line}")
            continue
        diffs = compare_schemas(src, dst, active_active=src_cfg.active_active)
        if not diffs:
            click.echo(f"{where} exists and matches {src_cfg.source_table}")
            continue
        click.echo(f"{where} exists (left as it is); {len(diffs)} difference(s) with {src_cfg.source_table}:")
        for diff in diffs:
            click.echo(f"  {diff}")
        breaking += sum(d.breaks for d in diffs)
    if breaking:
        click.echo(f"{breaking} difference(s) break replication", err=True)
        sys.exit(DIFFERENT_EXIT)


def _load(
    paths: tuple[str, ...], select: tuple[str, ...]
) -> tuple[list[config.Pipeline[config.PublishConfig]], list[config.Pipeline[config.ApplyConfig]]]:
    sources: list[config.Pipeline[config.PublishConfig]] = []
    targets: list[config.Pipeline[config.ApplyConfig]] = []
    for path in paths:
        if config.kind_of(Path(path)) == "publish":
            sources += config.load_pipelines(config.PublishConfig, path, {})
        else:
            targets += config.load_pipelines(config.ApplyConfig, path, {})
    if not sources or not targets:
        raise ConfigError("init-target needs bridge-publish's config (sources) and bridge-apply's (targets): --config")
    if select:
        known = {p.name for p in sources} | {p.name for p in targets}
        unknown = [n for n in select if n not in known]
        if unknown:
            raise ConfigError(f"--pipeline {', '.join(unknown)}: no such pipeline (known: {', '.join(sorted(known))})")
        targets = [t for t in targets if t.name in select]
    return sources, targets


def pair(
    sources: list[config.Pipeline[config.PublishConfig]], targets: list[config.Pipeline[config.ApplyConfig]]
) -> list[tuple[config.Pipeline[config.ApplyConfig], config.Pipeline[config.PublishConfig]]]:
    """Each apply pipeline with the publish pipeline feeding it: the same name, else the one whose
    source table its ``accept_tables`` names (default: its target table), else the only one."""
    by_name = {p.name: p for p in sources}
    by_table = {p.cfg.source_table: p for p in sources}
    pairs = []
    for target in targets:
        source = by_name.get(target.name) or next(
            (by_table[t] for t in target.cfg.accepted_tables if t in by_table), None
        )
        if source is None and len(sources) == 1 and len(targets) == 1:
            source = sources[0]
        if source is None:
            raise ConfigError(
                f"apply pipeline {target.name}: no publish pipeline feeds it (give both the same name, or list the"
                " source table in its accept_tables)"
            )
        pairs.append((target, source))
    return pairs


def _summary(schema: Schema, active_active: bool) -> str:
    request: dict[str, Any] = create_request(schema, schema.table, active_active=active_active)
    keys = ", ".join(f"{n} {kind} {t}" for n, kind, t in schema.keys)
    parts = [f"key {keys}"]
    if schema.gsis:
        parts.append(f"global secondary indexes {', '.join(sorted(schema.gsis))}")
    if schema.lsis:
        parts.append(f"local secondary indexes {', '.join(sorted(schema.lsis))}")
    parts.append(schema.billing_mode.lower().replace("_", "-"))
    if schema.ttl_attribute:
        parts.append(f"TTL on {schema.ttl_attribute}")
    if "StreamSpecification" in request:
        parts.append(f"stream {request['StreamSpecification']['StreamViewType']}")
    if schema.table_class:
        parts.append(f"class {schema.table_class}")
    if schema.deletion_protection:
        parts.append("deletion protection")
    if schema.tags:
        parts.append(f"{len(schema.tags)} tag(s)")
    return "; ".join(parts)
