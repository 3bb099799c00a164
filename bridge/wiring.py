"""Turning a validated config into a running publisher or applier.

Shared by the CLI, the demo and the tests, so all three run the same objects.
"""

from __future__ import annotations

import threading
from typing import Any

import botocore.exceptions

from bridge.activeactive import LoopGuard, SqliteStore
from bridge.apply.loop import Applier, OnApplied
from bridge.apply.target import TargetTable
from bridge.aws import AwsSide
from bridge.config import ApplyConfig, PublishConfig
from bridge.deadletter import Parker
from bridge.envelope import Compression, Signer, TrustStore
from bridge.errors import ConfigError, SourceError
from bridge.plugins import open_transport
from bridge.publish import BatchLimits, Publisher
from bridge.source.checkpoints import open_checkpoint_store
from bridge.source.streams import StreamReader
from bridge.transport import TransportURL
from bridge.transport.reliable import ReliableTransport


def _transports(url: str, dead_letter: str | None, role: str,
                stop: threading.Event) -> tuple[ReliableTransport, ReliableTransport]:
    main = open_transport(url, role)
    dlq_url = TransportURL.parse(dead_letter) if dead_letter else main.dead_letter_url()
    dlq = open_transport(dlq_url, "dlq")
    return ReliableTransport(main, stop=stop), ReliableTransport(dlq, stop=stop)


def describe_source(client: Any, table: str, *, old_images: bool = False) -> tuple[tuple[str, ...], str]:
    """Key attribute names (hash, range) and the stream ARN; fails clearly if unusable."""
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except client.exceptions.ResourceNotFoundException as exc:
        raise ConfigError(f"source table {table!r} does not exist") from exc
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SourceError(f"cannot describe source table {table!r}: {exc}") from exc
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
        raise ConfigError(f"active-active needs the stream of {table!r} to be NEW_AND_OLD_IMAGES, not"
                          f" {spec.get('StreamViewType')}: old images tell the bridge's own writes from others")
    keys = tuple(k["AttributeName"] for k in sorted(desc["KeySchema"], key=lambda k: k["KeyType"]))
    return keys, arn


def build_publisher(cfg: PublishConfig, stop: threading.Event, *, measure_raw: bool = False) -> Publisher:
    signer = Signer.from_file(cfg.signing_key)
    side = AwsSide(cfg.source_region, cfg.source_endpoint, cfg.source_profile)
    key_names, stream_arn = describe_source(side.client("dynamodb"), cfg.source_table,
                                            old_images=cfg.active_active)
    store = open_checkpoint_store(cfg.checkpoint, lambda: side.client("dynamodb"))
    reader = StreamReader(side.client("dynamodbstreams"), stream_arn, store,
                          start_position=cfg.start_position, on_trimmed=cfg.on_trimmed)
    transport, dlq = _transports(cfg.transport, cfg.dead_letter, "publish", stop)
    guard = None
    if cfg.active_active:
        # The same table bridge-apply writes to: its tombstones tell our deletes from the application's.
        local = TargetTable.open(side.client("dynamodb"), cfg.source_table, prefix=cfg.attribute_prefix,
                                 tombstone_table=cfg.tombstone_table)
        state = cfg.checkpoint + ".guard" if "://" not in cfg.checkpoint else "bridge-guard.sqlite"
        guard = LoopGuard(local, cfg.origin_id, store=SqliteStore(state))
    return Publisher(
        reader, transport, signer, Parker(dlq, cfg.quarantine_dir),
        table=cfg.source_table, key_names=key_names, origin=cfg.origin_id,
        timestamp_attribute=cfg.timestamp_attribute, compression=Compression(cfg.compression),
        limits=BatchLimits(cfg.batch_max_changes, cfg.batch_max_bytes, cfg.batch_max_wait),
        measure_raw=measure_raw, stop=stop, guard=guard, ttl_deletes=cfg.ttl_deletes,
    )


def build_applier(cfg: ApplyConfig, stop: threading.Event, *, on_applied: OnApplied | None = None) -> Applier:
    trust = TrustStore.load(cfg.trusted_keys)
    side = AwsSide(cfg.target_region, cfg.target_endpoint, cfg.target_profile,
                   max_pool_connections=max(10, cfg.workers + 2))
    target = TargetTable.open(
        side.client("dynamodb"), cfg.target_table, prefix=cfg.attribute_prefix,
        tombstone_table=cfg.tombstone_table, tombstone_ttl_s=int(cfg.tombstone_ttl_days * 86400),
        create=cfg.create, local_origin=cfg.origin or cfg.target_region,
    )
    transport, dlq = _transports(cfg.transport, cfg.dead_letter, "consume", stop)
    return Applier(transport, target, trust, Parker(dlq, cfg.quarantine_dir), workers=cfg.workers,
                   batch_messages=cfg.prefetch, on_applied=on_applied, stop=stop)
