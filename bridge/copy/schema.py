"""Table schemas: read one (DescribeTable and friends), compare two, create a target to match a source.

Used by ``bridge init-target`` (create each missing target table from its source's description; never
change an existing one) and ``bridge verify`` (report schema differences before comparing items).
What is copied: key schema, attribute definitions, global and local secondary indexes (projection
included), billing mode or capacity, TTL attribute, stream settings (NEW_AND_OLD_IMAGES when
active-active), table class, deletion protection and tags. A difference *breaks* replication when
changes could not be written as they come (another key schema), or, active-active, when the target
has no stream with old images for its own publisher; the others are reported and left alone.
May import ``bridge.aws`` and ``bridge.errors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws.errors import error_code, failure
from bridge.errors import ConfigError, SourceError

log = logging.getLogger(__name__)


@dataclass
class Schema:
    """The parts of a table's description a replica should share, in CreateTable's terms."""

    table: str
    key_schema: list[dict[str, str]]
    attributes: dict[str, str]  # attribute definitions: name -> S/N/B
    gsis: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> KeySchema, Projection, (throughput)
    lsis: dict[str, dict[str, Any]] = field(default_factory=dict)
    billing_mode: str = "PAY_PER_REQUEST"
    throughput: dict[str, int] | None = None  # PROVISIONED: read and write capacity units
    ttl_attribute: str | None = None
    stream: str | None = None  # view type, None: no stream
    table_class: str | None = None
    deletion_protection: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> list[tuple[str, str, str]]:
        """(name, HASH/RANGE, type) of the table's key."""
        return [
            (k["AttributeName"], k["KeyType"], self.attributes.get(k["AttributeName"], "?")) for k in self.key_schema
        ]


@dataclass(frozen=True)
class SchemaDifference:
    what: str  # e.g. "global secondary index by_email"
    source: str
    target: str
    breaks: bool = False  # replication cannot work (or not as configured) with it

    def __str__(self) -> str:
        mark = " (breaks replication)" if self.breaks else ""
        return f"{self.what}: source {self.source}, target {self.target}{mark}"


def _call(fn: Any, what: str, **kwargs: Any) -> dict[str, Any]:
    try:
        return dict(fn(**kwargs))
    except (ClientError, BotoCoreError) as exc:
        raise failure(exc, what, SourceError) from exc


def describe_schema(client: Any, table: str, side: str = "source") -> Schema | None:
    """The table's schema, or ``None`` if it does not exist."""
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise failure(exc, f"cannot describe {side} table {table!r}", SourceError) from exc
    except BotoCoreError as exc:
        raise failure(exc, f"cannot describe {side} table {table!r}", SourceError) from exc
    billing = (desc.get("BillingModeSummary") or {}).get("BillingMode") or (
        "PROVISIONED" if (desc.get("ProvisionedThroughput") or {}).get("ReadCapacityUnits") else "PAY_PER_REQUEST"
    )
    provisioned = billing == "PROVISIONED"
    schema = Schema(
        table,
        [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in desc["KeySchema"]],
        {d["AttributeName"]: d["AttributeType"] for d in desc.get("AttributeDefinitions", [])},
        billing_mode=billing,
        throughput=_throughput(desc.get("ProvisionedThroughput")) if provisioned else None,
        table_class=(desc.get("TableClassSummary") or {}).get("TableClass"),
        deletion_protection=bool(desc.get("DeletionProtectionEnabled", False)),
    )
    for index in desc.get("GlobalSecondaryIndexes", []):
        spec = {"KeySchema": index["KeySchema"], "Projection": _projection(index.get("Projection"))}
        if provisioned and index.get("ProvisionedThroughput"):
            spec["ProvisionedThroughput"] = _throughput(index["ProvisionedThroughput"])
        schema.gsis[index["IndexName"]] = spec
    for index in desc.get("LocalSecondaryIndexes", []):
        schema.lsis[index["IndexName"]] = {
            "KeySchema": index["KeySchema"],
            "Projection": _projection(index.get("Projection")),
        }
    stream = desc.get("StreamSpecification") or {}
    schema.stream = stream.get("StreamViewType") if stream.get("StreamEnabled") else None
    ttl = _call(client.describe_time_to_live, f"cannot read TTL of {side} table {table!r}", TableName=table)
    ttl_desc = ttl.get("TimeToLiveDescription") or {}
    if ttl_desc.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        schema.ttl_attribute = ttl_desc.get("AttributeName")
    if desc.get("TableArn"):
        try:
            tags = client.list_tags_of_resource(ResourceArn=desc["TableArn"]).get("Tags", [])
            schema.tags = {t["Key"]: t["Value"] for t in tags}
        except (ClientError, BotoCoreError) as exc:  # tags are informative: never a reason to stop
            log.warning("cannot read tags of %s table %s: %s", side, table, exc)
    return schema


def _throughput(value: dict[str, Any] | None) -> dict[str, int]:
    value = value or {}
    return {
        "ReadCapacityUnits": int(value.get("ReadCapacityUnits") or 1),
        "WriteCapacityUnits": int(value.get("WriteCapacityUnits") or 1),
    }


def _projection(value: dict[str, Any] | None) -> dict[str, Any]:
    value = value or {"ProjectionType": "ALL"}
    out: dict[str, Any] = {"ProjectionType": value.get("ProjectionType", "ALL")}
    if value.get("NonKeyAttributes"):
        out["NonKeyAttributes"] = sorted(value["NonKeyAttributes"])
    return out


def _index_attributes(schema: Schema) -> set[str]:
    names = {k["AttributeName"] for k in schema.key_schema}
    for index in (*schema.gsis.values(), *schema.lsis.values()):
        names |= {k["AttributeName"] for k in index["KeySchema"]}
    return names


def create_request(source: Schema, target_table: str, *, active_active: bool = False) -> dict[str, Any]:
    """CreateTable's arguments for a target matching ``source`` (TTL is set after: its own call)."""
    request: dict[str, Any] = {
        "TableName": target_table,
        "KeySchema": source.key_schema,
        # Only attributes that a key uses may be defined: DynamoDB refuses the others.
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": source.attributes[n]} for n in sorted(_index_attributes(source))
        ],
        "BillingMode": source.billing_mode,
    }
    if source.throughput is not None:
        request["ProvisionedThroughput"] = source.throughput
    if source.gsis:
        request["GlobalSecondaryIndexes"] = [{"IndexName": n, **spec} for n, spec in sorted(source.gsis.items())]
    if source.lsis:
        request["LocalSecondaryIndexes"] = [{"IndexName": n, **spec} for n, spec in sorted(source.lsis.items())]
    stream = "NEW_AND_OLD_IMAGES" if active_active else source.stream
    if stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream}
    if source.table_class:
        request["TableClass"] = source.table_class
    if source.deletion_protection:
        request["DeletionProtectionEnabled"] = True
    if source.tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in sorted(source.tags.items())]
    return request


# What a partition (or emulator) may refuse without the table being wrong: dropped, reported, retried.
OPTIONAL = ("Tags", "TableClass", "DeletionProtectionEnabled")


def create_target(client: Any, source: Schema, target_table: str, *, active_active: bool = False) -> list[str]:
    """Create the target table and set its TTL; what the target partition did not take, one line each."""
    request = create_request(source, target_table, active_active=active_active)
    skipped: list[str] = []
    while True:
        try:
            client.create_table(**request)
            break
        except ClientError as exc:
            optional = [o for o in OPTIONAL if o in request]
            if error_code(exc) not in ("ValidationException", "UnknownOperationException") or not optional:
                raise failure(exc, f"cannot create target table {target_table!r}", ConfigError) from exc
            dropped = optional[-1]
            skipped.append(f"{dropped} not set: the target refused it ({error_code(exc)})")
            request.pop(dropped)
        except BotoCoreError as exc:
            raise failure(exc, f"cannot create target table {target_table!r}", ConfigError) from exc
    client.get_waiter("table_exists").wait(TableName=target_table)
    if source.ttl_attribute:
        try:
            client.update_time_to_live(
                TableName=target_table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": source.ttl_attribute},
            )
        except (ClientError, BotoCoreError) as exc:
            skipped.append(f"TTL on {source.ttl_attribute} not set: {exc}")
    return skipped


def compare_schemas(source: Schema, target: Schema, *, active_active: bool = False) -> list[SchemaDifference]:
    """Every difference between two tables' schemas, those that break replication marked."""
    diffs: list[SchemaDifference] = []

    def keys(s: Schema) -> str:
        return ", ".join(f"{n} {kind} {t}" for n, kind, t in s.keys)

    if source.keys != target.keys:
        diffs.append(SchemaDifference("key schema", keys(source), keys(target), breaks=True))
    for kind, src, dst in (
        ("global secondary index", source.gsis, target.gsis),
        ("local secondary index", source.lsis, target.lsis),
    ):
        for name in sorted(src.keys() | dst.keys()):
            if name not in dst:
                diffs.append(SchemaDifference(f"{kind} {name}", "has it", "missing"))
            elif name not in src:
                diffs.append(SchemaDifference(f"{kind} {name}", "missing", "has it"))
            elif _index_shape(src[name]) != _index_shape(dst[name]):
                diffs.append(SchemaDifference(f"{kind} {name}", _index_text(src[name]), _index_text(dst[name])))
    if source.billing_mode != target.billing_mode:
        diffs.append(SchemaDifference("billing mode", source.billing_mode, target.billing_mode))
    if source.ttl_attribute != target.ttl_attribute:
        diffs.append(SchemaDifference("TTL attribute", source.ttl_attribute or "off", target.ttl_attribute or "off"))
    if active_active and target.stream != "NEW_AND_OLD_IMAGES":
        diffs.append(
            SchemaDifference("stream", "NEW_AND_OLD_IMAGES (active-active)", target.stream or "none", breaks=True)
        )
    if (source.table_class or "STANDARD") != (target.table_class or "STANDARD"):
        diffs.append(
            SchemaDifference("table class", source.table_class or "STANDARD", target.table_class or "STANDARD")
        )
    return diffs


def _index_shape(spec: dict[str, Any]) -> tuple[Any, ...]:
    keys = tuple((k["AttributeName"], k["KeyType"]) for k in spec["KeySchema"])
    return keys, _projection(spec.get("Projection"))


def _index_text(spec: dict[str, Any]) -> str:
    keys, projection = _index_shape(spec)
    extra = f" {projection['NonKeyAttributes']}" if projection.get("NonKeyAttributes") else ""
    return f"key ({', '.join(f'{n} {k}' for n, k in keys)}), projection {projection['ProjectionType']}{extra}"
