"""Turning a validated config into a running publisher or applier.

Shared by the CLI, the demo and the tests, so all three run the same objects.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from bridge.apply.loop import Applier, ApplyStats, ChangeApplier, OnApplied
from bridge.apply.retry import RetryPolicy
from bridge.apply.target import TargetTable
from bridge.aws import AwsSide, ErrorClass, classify, describe
from bridge.aws.errors import failure
from bridge.config import ApplyConfig, Pipeline, PublishConfig, refuse_shared_transports
from bridge.deadletter.records import Parker
from bridge.envelope import Compression, Scope, Signer, TrustStore
from bridge.errors import ConfigError, SourceError, SystemicError
from bridge.observe import Health
from bridge.plugin.manager import PluginSet, plugin_set
from bridge.publish import BatchLimits, Publisher
from bridge.publish.loop import RecordReader
from bridge.publish.loopguard import LoopGuard
from bridge.publish.projection import Projection
from bridge.publish.sender import Sender
from bridge.source.streams import StreamReader
from bridge.state.checkpoints import open_checkpoint_store
from bridge.state.guard_memory import MemoryStore, SqliteStore
from bridge.state.namespace import namespaced
from bridge.state.scan_progress import open_scan_progress
from bridge.transport import TransportURL
from bridge.transport.reliable import ReliableTransport

if TYPE_CHECKING:  # imported where used: the bootstrap's progress display (rich) is no cost to the Lambda handlers
    from bridge.copy.bootstrap import Bootstrap

log = logging.getLogger(__name__)
TOMBSTONES = "-bridge-tombstones"


def _transports(
    plugins: PluginSet | None,
    url: str,
    dead_letter: str | None,
    role: str,
    stop: threading.Event,
    quarantine_dir: Path,
    health: Health | None = None,
) -> tuple[ReliableTransport, Parker]:
    """The main transport and the parker over its dead-letter queue, opened through ``plugins``
    (the process's plugin set unless the caller built its own)."""
    plugins = plugins or plugin_set()
    main = plugins.open(url, role)
    dlq_url = TransportURL.parse(dead_letter) if dead_letter else main.dead_letter_url()
    reliable = ReliableTransport(main, stop=stop), ReliableTransport(plugins.open(dlq_url, "dlq"), stop=stop)
    for transport in reliable:
        transport.health = health
    return reliable[0], Parker(reliable[1], quarantine_dir, opener=plugins.open)


def aws_side(cfg: PublishConfig | ApplyConfig, which: str, **extra: Any) -> AwsSide:
    """The source or target side's AWS settings (``source_*`` / ``target_*``, ``aws_*``)."""
    values = {
        name.removeprefix(f"{which}_"): value
        for name, value in cfg.model_dump().items()
        if name.startswith(f"{which}_")
    }
    values["endpoint_url"] = values.pop("endpoint", None)
    return AwsSide.from_params(
        values,
        what=f"{which} side",
        connect_timeout=cfg.aws_connect_timeout,
        read_timeout=cfg.aws_read_timeout,
        max_attempts=cfg.aws_max_attempts,
        **extra,
    )


def describe_source(client: Any, table: str, *, old_images: bool = False) -> tuple[tuple[str, ...], str]:
    """Key attribute names (hash, range) and the stream ARN; fails clearly if unusable."""
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except client.exceptions.ResourceNotFoundException as exc:
        raise ConfigError(f"source table {table!r} does not exist") from exc
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if classify(exc) is ErrorClass.SYSTEMIC:
            raise SystemicError(f"cannot describe source table {table!r}: {describe(exc)}") from exc
        raise SourceError(f"cannot describe source table {table!r}: {describe(exc)}") from exc
    spec = desc.get("StreamSpecification") or {}
    arn = desc.get("LatestStreamArn")
    if not spec.get("StreamEnabled") or not arn:
        raise ConfigError(f"source table {table!r} has no stream: enable one with NEW_AND_OLD_IMAGES")
    if spec.get("StreamViewType") not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        raise ConfigError(
            f"source table {table!r} streams {spec.get('StreamViewType')}; the bridge needs"
            " NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    if old_images and spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
        raise ConfigError(
            f"active-active needs the stream of {table!r} to be NEW_AND_OLD_IMAGES, not"
            f" {spec.get('StreamViewType')}: old images tell the bridge's own writes from others"
        )
    keys = tuple(k["AttributeName"] for k in sorted(desc["KeySchema"], key=lambda k: k["KeyType"]))
    return keys, arn


def build_publisher(
    cfg: PublishConfig,
    stop: threading.Event,
    *,
    measure_raw: bool = False,
    reset_checkpoint: bool = False,
    plugins: PluginSet | None = None,
    namespace: str | None = None,
    signer: Signer | None = None,
    reader: RecordReader | None = None,
    guard_store: MemoryStore | None = None,
) -> Publisher:
    """The publisher of ``cfg``. ``namespace``: a listed pipeline's name, under which its checkpoints
    are kept (bridge.state.namespace). The serverless handler passes its own ``signer`` (from SSM),
    ``reader`` (the event's records) and ``guard_store`` (DynamoDB); the daemon builds them here."""
    health = Health()
    signer = signer or Signer.from_file(cfg.signing_key)
    side = aws_side(cfg, "source")
    key_names, stream_arn = describe_source(side.client("dynamodb"), cfg.source_table, old_images=cfg.active_active)
    projection = projection_of(cfg, key_names, cfg.source_table)  # refused before anything is opened
    if reader is None:
        store = namespaced(
            open_checkpoint_store(cfg.checkpoint, lambda: side.client("dynamodb"), reset=reset_checkpoint), namespace
        )
        reader = StreamReader(
            side.client("dynamodbstreams"),
            stream_arn,
            store,
            start_position=cfg.start_position,
            on_trimmed=cfg.on_trimmed,
        )
    transport, parker = _transports(
        plugins, cfg.transport, cfg.dead_letter, "publish", stop, cfg.quarantine_dir, health
    )
    guard = None
    if cfg.active_active:
        # The same table bridge-apply writes to: its tombstones tell our deletes from the application's.
        local = TargetTable.open(
            side.client("dynamodb"), cfg.source_table, prefix=cfg.attribute_prefix, tombstone_table=cfg.tombstone_table
        )
        if guard_store is None:
            state = cfg.checkpoint + ".guard" if "://" not in cfg.checkpoint else "bridge-guard.sqlite"
            if namespace:
                state = state.removesuffix(".guard").removesuffix(".sqlite") + f".{namespace}.guard"
            guard_store = SqliteStore(state)
        guard = LoopGuard(local, cfg.origin_id, store=guard_store)
    return Publisher(
        reader,
        transport,
        signer,
        parker,
        table=cfg.source_table,
        key_names=key_names,
        origin=cfg.origin_id,
        timestamp_attribute=cfg.timestamp_attribute,
        compression=Compression(cfg.compression),
        limits=BatchLimits(cfg.batch_max_changes, cfg.batch_max_bytes, cfg.batch_max_wait),
        measure_raw=measure_raw,
        stop=stop,
        guard=guard,
        ttl_deletes=cfg.ttl_deletes,
        health=health,
        max_paused=cfg.max_paused,
        projection=projection,
        pause_scope=f"{namespace} publish" if namespace else "publish",
    )


def projection_of(cfg: PublishConfig | ApplyConfig, key_names: tuple[str, ...], table: str) -> Projection | None:
    """The attributes a pipeline ships; an excluded key attribute is refused here, at start."""
    return Projection.of(cfg.exclude_attributes, cfg.include_attributes, key_names, table)


def open_target(cfg: ApplyConfig) -> TargetTable:
    """The target table as bridge-apply writes to it; ``bridge dlq replay`` writes the same way."""
    side = aws_side(cfg, "target", max_pool_connections=max(10, cfg.workers + 2))
    return TargetTable.open(
        side.client("dynamodb"),
        cfg.target_table,
        prefix=cfg.attribute_prefix,
        tombstone_table=cfg.tombstone_table,
        tombstone_ttl_s=int(cfg.tombstone_ttl_days * 86400),
        create=cfg.create,
        local_origin=cfg.origin or cfg.target_region,
        keep=(cfg.exclude_attributes, cfg.include_attributes) if cfg.exclude_mode == "keep" else None,
    )


def retry_policy(cfg: ApplyConfig) -> RetryPolicy:
    return RetryPolicy(cfg.retry_max_attempts, cfg.retry_max_age, cfg.retry_initial_delay, cfg.retry_max_delay)


def build_change_applier(cfg: ApplyConfig, stats: ApplyStats) -> ChangeApplier:
    """What applies changes outside the apply loop (``bridge dlq replay``): bridge-apply's target and retries."""
    return ChangeApplier(open_target(cfg), stats, workers=cfg.workers, transient_retries=cfg.transient_retries)


def build_applier(
    cfg: ApplyConfig,
    stop: threading.Event,
    *,
    on_applied: OnApplied | None = None,
    name: str | None = None,
    plugins: PluginSet | None = None,
    trust: TrustStore | None = None,
    target: TargetTable | None = None,
    source: ReliableTransport | None = None,
    parker: Parker | None = None,
) -> Applier:
    """The applier of ``cfg``. ``name``: a listed pipeline's, naming its pause in readiness and logs.
    The serverless handler passes its own ``trust`` (from SSM), ``target`` (opened once per
    container), ``source`` (the event's messages) and ``parker``."""
    health = Health()
    trust = trust or TrustStore.load(cfg.trusted_keys, accept=Scope.of(cfg.accepted_tables, cfg.accept_origins))
    target = target or open_target(cfg)
    if source is None or parker is None:
        transport, own_parker = _transports(
            plugins, cfg.transport, cfg.dead_letter, "consume", stop, cfg.quarantine_dir, health
        )
        source, parker = source or transport, parker or own_parker
    return Applier(
        source,
        target,
        trust,
        parker,
        workers=cfg.workers,
        batch_messages=cfg.batch_messages,
        on_applied=on_applied,
        stop=stop,
        transient_retries=cfg.transient_retries,
        retry_policy=retry_policy(cfg),
        health=health,
        max_paused=cfg.max_paused,
        pause_scope=f"{name} apply" if name else "apply",
    )


def build_sender(
    transport_url: str,
    dead_letter: str | None,
    signer: Signer,
    quarantine_dir: Path,
    *,
    origin: str,
    table: str,
    stop: threading.Event,
    compression: str = "zstd",
    projection: Projection | None = None,
    plugins: PluginSet | None = None,
) -> Sender:
    """A sender of its own (connections included): the bootstrap's worker threads and ``verify --repair``."""
    transport, parker = _transports(plugins, transport_url, dead_letter, "publish", stop, quarantine_dir)
    return Sender(
        transport,
        signer,
        parker,
        origin=origin,
        table=table,
        compression=Compression(compression),
        projection=projection,
    )


def build_bootstrap(
    cfg: PublishConfig, stop: threading.Event, *, reset_checkpoint: bool = False, namespace: str | None = None
) -> tuple[Publisher, Bootstrap]:
    """The stream publisher plus the copy of existing items (``--bootstrap``); run with ``run_alongside``."""
    from bridge.copy.bootstrap import Bootstrap

    if cfg.start_position == "latest":
        log.info(
            "--bootstrap: a first start reads the stream from trim-horizon, not latest, so no change made"
            " while the copy runs is missed"
        )
    publisher = build_publisher(
        cfg.model_copy(update={"start_position": "trim-horizon"}),
        stop,
        reset_checkpoint=reset_checkpoint,
        namespace=namespace,
    )
    signer = Signer.from_file(cfg.signing_key)
    side = aws_side(cfg, "source")
    client = side.client("dynamodb")

    def make_sender() -> Sender:
        return build_sender(
            cfg.transport,
            cfg.dead_letter,
            signer,
            cfg.quarantine_dir,
            origin=cfg.origin_id,
            table=cfg.source_table,
            stop=stop,
            compression=cfg.compression,
            projection=publisher.sender.projection,
        )

    bootstrap = Bootstrap(
        client,
        cfg.source_table,
        publisher.key_names,
        open_scan_progress(cfg.checkpoint, lambda: client),
        make_sender,
        origin=cfg.origin_id,
        timestamp_attribute=cfg.timestamp_attribute,
        version_attribute=f"{cfg.attribute_prefix}_v" if cfg.active_active else None,
        segments=cfg.bootstrap_segments,
        rcu=cfg.bootstrap_rcu,
        page_items=cfg.bootstrap_page_items,
        limits=BatchLimits(cfg.batch_max_changes, cfg.batch_max_bytes, cfg.batch_max_wait),
        force=cfg.bootstrap_force,
        stop=stop,
    )
    if namespace:
        bootstrap.run_name = f"{namespace}/{bootstrap.run_name}"  # its copy's progress, beside its checkpoints
    return publisher, bootstrap


def expand_pipelines(pipelines: list[Pipeline[PublishConfig]]) -> list[Pipeline[PublishConfig]]:
    """Each pipeline whose ``source_table`` is a pattern (``orders-*``) becomes one per matching table
    (ListTables on its source side, now), named after the table; ``{table}`` in its transport URLs
    becomes the table. Says which tables each pattern matched; one that matched none is logged."""
    out: list[Pipeline[PublishConfig]] = []
    for pipeline in pipelines:
        if not pipeline.pattern:
            out.append(pipeline)
            continue
        pattern = pipeline.cfg.source_table
        client = aws_side(pipeline.cfg, "source").client("dynamodb")
        try:
            tables = [t for page in client.get_paginator("list_tables").paginate() for t in page.get("TableNames", [])]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise failure(exc, f"cannot list source tables for {pattern!r}", SourceError) from exc
        # Tombstone and checkpoint tables of this very bridge are never sources.
        matched = [
            t for t in sorted(tables) if fnmatch.fnmatchcase(t, pattern) and not t.endswith("-bridge-tombstones")
        ]
        if not matched:
            log.warning("source_tables %s matches no table in %s", pattern, pipeline.cfg.source_region)
            continue
        log.info("source_tables %s: %s", pattern, ", ".join(matched))
        for table in matched:
            update: dict[str, Any] = {"source_table": table}
            for key in ("transport", "dead_letter"):
                url = getattr(pipeline.cfg, key)
                if url is not None:
                    update[key] = url.replace("{table}", table)
            out.append(Pipeline[PublishConfig](name=table, cfg=pipeline.cfg.model_copy(update=update), listed=True))
    names = [p.name for p in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"pipeline name {', '.join(twice)} used twice once source_tables were expanded")
    refuse_shared_transports(out)
    return out
