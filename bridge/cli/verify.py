"""``bridge verify``: compare a source and a target table; ``--repair`` re-publishes what differs."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path
from typing import Any

import click
import orjson

from bridge.apply.keep import Keep
from bridge.cli.common import aws_side_options, handled, log_level_option, setup_logging
from bridge.cli.verify_settings import VerifySettings
from bridge.copy.schema import SchemaDifference, compare_schemas, describe_schema
from bridge.copy.verify import DIFFERENT_EXIT, Repairer, Side, Verifier, VerifyResult, table_keys
from bridge.errors import ConfigError
from bridge.publish.projection import Projection


@click.command("verify")
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="bridge-publish's config (the source side, and --repair's settings) and/or bridge-apply's (the target"
    " side); flags override them",
)
@click.option("--pipeline", help="which pipeline, when the configs list pipelines: (docs/pipelines.md)")
@click.option("--source-table", help="the replicated table")
@click.option("--source-region")
@click.option("--source-endpoint", help="endpoint URL override (emulators, VPC endpoints)")
@click.option("--source-profile", help="AWS profile for the source side")
@aws_side_options("source")
@click.option("--target-table", help="the table bridge-apply writes")
@click.option("--target-region")
@click.option("--target-endpoint", help="endpoint URL override")
@click.option("--target-profile", help="AWS profile for the target side")
@aws_side_options("target", shared=False)
@click.option(
    "--segments", type=click.IntRange(1, 1000), default=4, show_default=True, help="parallel scan segments per table"
)
@click.option("--buckets", type=click.IntRange(1, 1 << 24), help="digest buckets (default: item count / 64)")
@click.option(
    "--rcu",
    type=click.FloatRange(min=0, min_open=True),
    help="read capacity units per second per table (default: no limit)",
)
@click.option("--attribute-prefix", help="bridge-owned attributes, ignored (default _bridge)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@click.option("--repair", is_flag=True, help="re-publish differing keys through the transport")
@click.option("--transport", help="--repair: transport URL bridge-apply reads")
@click.option("--signing-key", help="--repair: Ed25519 private key (bridge keygen)")
@click.option("--origin", help="--repair: the source's origin name (default: source region)")
@click.option("--timestamp-attribute", help="--repair: as bridge-publish's setting")
@click.option("--dead-letter", help="--repair: dead-letter transport URL (default: <queue>.dlq)")
@click.option("--quarantine-dir", type=click.Path(file_okay=False), help="--repair: as bridge-publish's setting")
@click.option(
    "--repair-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="seconds to wait for bridge-apply to apply the repairs",
)
@log_level_option
@handled
def verify(
    config_files: tuple[str, ...],
    segments: int,
    buckets: int | None,
    rcu: float | None,
    as_json: bool,
    repair: bool,
    repair_wait: float,
    log_level: str,
    pipeline: str | None,
    **flags: Any,
) -> None:
    """Compare SOURCE and TARGET item by item (bridge attributes aside). Exit 0 when identical,
    8 when they differ (after --repair: 0 once every difference was repaired and seen applied).

    Each side is reached as its daemon reaches it (role, external id, SSM-held keys, proxy): give the
    daemons' config files with --config, or the same flags.
    """
    setup_logging(log_level.upper())
    settings = VerifySettings.from_configs(config_files, flags, pipeline)
    source_table, target_table = settings.table("source"), settings.table("target")
    transport, signing_key = settings.get("transport"), settings.get("signing_key")
    source_region = str(settings.side("source").region)
    origin = settings.get("origin")
    timestamp_attribute = settings.get("timestamp_attribute")
    dead_letter = settings.get("dead_letter")
    quarantine_dir = settings.get("quarantine_dir") or "bridge-quarantine"
    attribute_prefix = settings.get("attribute_prefix") or "_bridge"
    if repair and not (transport and signing_key):
        raise ConfigError("--repair needs --transport (the URL bridge-apply reads) and --signing-key")
    stop = threading.Event()
    source = Side(settings.side("source").client("dynamodb"), source_table, "source")
    target = Side(settings.side("target").client("dynamodb"), target_table, "target")
    source, target, projection = projected(settings, source, target, attribute_prefix)
    # Schemas first: a missing index or TTL is worth knowing even when every item agrees.
    active_active = bool(settings.publish is not None and settings.publish.active_active)
    schema = schema_differences(source, target, active_active)
    if not as_json:
        for diff in schema:
            click.echo(f"schema: {diff}")
    verifier = Verifier(source, target, prefix=attribute_prefix, segments=segments, buckets=buckets, rcu=rcu, stop=stop)
    result = verifier.run()
    if repair and result.differences:
        from bridge.envelope import Signer
        from bridge.wiring import build_sender

        assert transport is not None and signing_key is not None
        sender = build_sender(
            transport,
            dead_letter,
            Signer.from_file(Path(signing_key)),
            Path(quarantine_dir),
            origin=origin or source_region,
            table=source_table,
            stop=stop,
            projection=projection,
        )
        try:
            result.repair = Repairer(
                sender,
                source,
                target,
                verifier.key_names,
                origin=origin or source_region,
                timestamp_attribute=timestamp_attribute,
                prefix=attribute_prefix,
            ).repair(result.differences, wait_s=repair_wait)
        finally:
            sender.close()
    if as_json:
        doc = {**result.as_dict(), "schema_differences": [dataclasses.asdict(d) for d in schema]}
        click.echo(orjson.dumps(doc).decode())
    else:
        _print(result, source_table, target_table)
    sys.exit(0 if result.ok and not any(d.breaks for d in schema) else DIFFERENT_EXIT)


def schema_differences(source: Side, target: Side, active_active: bool) -> list[SchemaDifference]:
    """How the two tables' schemas differ (none when either is missing: the item pass says so)."""
    src = describe_schema(source.client, source.table, "source")
    dst = describe_schema(target.client, target.table, "target")
    if src is None or dst is None:
        return []
    return compare_schemas(src, dst, active_active=active_active)


def projected(
    settings: VerifySettings, source: Side, target: Side, prefix: str
) -> tuple[Side, Side, Projection | None]:
    """Both sides as the pipeline makes them comparable: the source through the projection the configs
    name (publish config first), the target without the attributes it keeps (apply's exclude_mode keep)."""
    exclude, include = settings.get("exclude_attributes"), settings.get("include_attributes")
    if exclude is None and include is None:
        return source, target, None
    keys = table_keys(source.client, source.table, "source")
    projection = Projection.of(exclude, include, keys, source.table)
    if projection is None:
        return source, target, None
    source = dataclasses.replace(source, view=projection.image)
    if settings.apply is not None and settings.apply.exclude_mode == "keep":
        target = dataclasses.replace(target, view=Keep.of(exclude, include, keys, prefix).user_view)
    return source, target, projection


def _print(result: VerifyResult, source_table: str, target_table: str) -> None:
    click.echo(
        f"source {source_table}: {result.source_items} items; target {target_table}: {result.target_items}"
        f" items; {result.differing_buckets} of {result.buckets} buckets differ"
    )
    if result.settled:
        click.echo(f"{result.settled} keys differed while scanning but agree now (changes in flight)")
    if result.identical:
        click.echo("identical")
        return
    click.echo(f"{len(result.differences)} keys differ:")
    for d in result.differences:
        click.echo(f"  {d.kind.replace('_', ' '):15} {orjson.dumps(d.key).decode()}")
    report = result.repair
    if report is None:
        return
    click.echo(
        f"repair: {report.sent} sent, {report.confirmed} seen applied, {report.settled} agreed already,"
        f" {len(report.refused)} refused, {len(report.unconfirmed)} not applied within the wait"
    )
    for refused in report.refused:
        click.echo(
            f"  refused {orjson.dumps(refused['key']).decode()}: target holds {refused['target_version']},"
            f" newer than the repair's {refused['repair_version']}"
        )
    for key in report.unconfirmed:
        click.echo(f"  not applied yet {orjson.dumps(key).decode()} (is bridge-apply running?)")
