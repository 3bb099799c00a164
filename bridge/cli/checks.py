"""``bridge check-config``: the effective value of every setting, and ``--connect``'s live checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.config import ApplyConfig, PublishConfig
from bridge.errors import BridgeError
from bridge.transport import redact

Config = PublishConfig | ApplyConfig

# What an unset (None) setting means, instead of printing "None".
_UNSET: dict[str, str] = {
    "endpoint": "AWS's endpoint for the region",
    "profile": "boto3's default credential chain",
    "role_arn": "none: the side's own credentials",
    "external_id": "none",
    "proxy": "none: direct connections",
    "ssm_access_key_param": "none",
    "ssm_secret_key_param": "none",
    "ssm_region": "the local region",
    "timestamp_attribute": "the stream's creation time",
    "until_idle": "off: run until stopped",
    "bootstrap_rcu": "no limit",
    "bootstrap_page_items": "DynamoDB's 1 MB pages",
    "metrics_port": "off: /metrics, /healthz and /readyz not served",
    "status_file": "not kept",
}


def effective_settings(cfg: Config) -> dict[str, str]:
    """Every setting as it will run: defaults spelt out, URLs without passwords."""
    shown: dict[str, str] = {}
    for key, value in cfg.model_dump(mode="json").items():
        if value is None:
            shown[key] = f"({_default_of(cfg, key)})"
        elif isinstance(value, str) and "://" in value:
            shown[key] = redact(value)  # never print a broker password
        else:
            shown[key] = str(value)
    return shown


def _default_of(cfg: Config, key: str) -> str:
    if key == "origin":
        side = "source_region" if isinstance(cfg, PublishConfig) else "target_region"
        return f"{getattr(cfg, side)}: the {side}"
    if key == "tombstone_table":
        table = cfg.source_table if isinstance(cfg, PublishConfig) else cfg.target_table
        return f"{table}-bridge-tombstones"
    if key == "dead_letter":
        try:
            from bridge.plugin.manager import open_transport

            return f"{open_transport(cfg.transport, 'dlq').dead_letter_url().redacted()}: beside the transport"
        except BridgeError:
            return "beside the transport"
    for suffix, meaning in _UNSET.items():
        if key == suffix or key.endswith("_" + suffix):
            return meaning
    return "not set"


def connect_checks(cfg: Config) -> list[tuple[str, Callable[[], str]]]:
    """(what, check) pairs; a check returns what it found or raises the BridgeError naming the problem."""
    checks: list[tuple[str, Callable[[], str]]] = [("transport plugin", lambda: _plugin(cfg))]
    if isinstance(cfg, PublishConfig):
        checks.append(("signing key", lambda: _signing_key(cfg)))
    else:
        checks.append(("trusted keys", lambda: _trusted_keys(cfg)))
    checks.append(("broker", lambda: _broker(cfg)))
    if isinstance(cfg, PublishConfig):
        checks.append(("source table and stream", lambda: _source(cfg)))
    else:
        checks.append(("target table", lambda: _target(cfg)))
    return checks


def _plugin(cfg: Config) -> str:
    from bridge.plugin.manager import plugin_set

    url = cfg.transport.split("://", 1)[0]
    info = next((i for i in plugin_set().infos if url in i.schemes), None)
    from bridge.plugin.manager import open_transport

    open_transport(cfg.transport, "dlq").close()  # loads the plugin and parses the URL, connects nothing
    return f"{info.name} {info.version} ({info.package})" if info else f"{url}:// handled"


def _signing_key(cfg: PublishConfig) -> str:
    from bridge.envelope import Signer

    return f"Ed25519 private key, mode 0600, key id {Signer.from_file(cfg.signing_key).key_id}"


def _trusted_keys(cfg: ApplyConfig) -> str:
    from bridge.envelope import TrustStore

    store = TrustStore.load(cfg.trusted_keys)
    return f"{len(store.key_ids)} Ed25519 public key(s): {', '.join(sorted(store.key_ids))}"


def _broker(cfg: Config) -> str:
    from bridge.plugin.manager import open_transport

    transport = open_transport(cfg.transport, "dlq")
    try:
        depth = transport.depth()
    finally:
        transport.close()
    if depth is None:
        return f"{transport.url.redacted()}: not checked (this transport cannot be probed without reading)"
    return f"{transport.url.redacted()}: connected, {depth} message(s) waiting"


def _source(cfg: PublishConfig) -> str:
    from bridge.wiring import aws_side, describe_source

    keys, arn = describe_source(
        aws_side(cfg, "source").client("dynamodb"), cfg.source_table, old_images=cfg.active_active
    )
    return f"{cfg.source_table}: keys {', '.join(keys)}; stream {arn}"


def _target(cfg: ApplyConfig) -> str:
    import botocore.exceptions

    from bridge.errors import ConfigError
    from bridge.wiring import aws_side

    client: Any = aws_side(cfg, "target").client("dynamodb")
    tombstones = cfg.tombstone_table or f"{cfg.target_table}-bridge-tombstones"
    try:
        desc = client.describe_table(TableName=cfg.target_table)["Table"]
    except client.exceptions.ResourceNotFoundException as exc:
        raise ConfigError(f"target table {cfg.target_table!r} does not exist") from exc
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise ConfigError(f"cannot describe target table {cfg.target_table!r}: {exc}") from exc
    keys = ", ".join(k["AttributeName"] for k in sorted(desc["KeySchema"], key=lambda k: k["KeyType"]))
    try:
        client.describe_table(TableName=tombstones)
        companion = f"tombstone table {tombstones} exists"
    except client.exceptions.ResourceNotFoundException:
        if not cfg.create:
            raise ConfigError(f"tombstone table {tombstones!r} does not exist and create is off") from None
        companion = f"tombstone table {tombstones} will be created on first start"
    return f"{cfg.target_table}: keys {keys}; {companion}"
