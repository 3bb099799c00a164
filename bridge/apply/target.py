"""Writing one change to the target table: last writer wins, with tombstones.

Plain conditional writes, no transactions (which cost twice the write capacity on AWS):

* put:    PutItem if the stored version is older or absent. Only when that created a
          new item (no old image came back) is the tombstone read (consistent) and, if
          it holds a newer delete, the put undone with a delete conditional on our own
          version. So an insert costs one write and one read; an update one write.
* delete: tombstone first (kept if older), then DeleteItem if the stored version is
          older or absent. A crash between the two is finished by the redelivery.

The tombstone lives in a companion table so users' reads never see it. The order
"tombstone before delete" and "put before tombstone read" means an older write that
arrives after a newer delete never survives; it may be visible for the milliseconds
between its put and its undo (docs/consistency.md). The version (see
:class:`bridge.change.Version`) is stored as one sortable string, so a single ``<``
compares timestamp, origin and sequence number in that order.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from bridge.change import Change, Image, Operation, to_boto_image
from bridge.errors import ConfigError, PermanentApplyError, TransientApplyError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "_bridge"
TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "TransactionConflictException",
    "TransactionInProgressException", "LimitExceededException",
})
NETWORK_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)


class Outcome(str, enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this exact version is already there
    STALE = "stale"  # a newer version (or tombstone) is already there


@dataclass(frozen=True)
class TargetTable:
    """The target table plus its tombstone table, resolved and checked at start."""

    client: Any
    table: str
    key_names: tuple[str, ...]
    key_types: dict[str, str]
    tombstone_table: str
    prefix: str = DEFAULT_PREFIX
    tombstone_ttl_s: int = 14 * 86400

    @property
    def version_attr(self) -> str:
        return f"{self.prefix}_v"

    @property
    def expires_attr(self) -> str:
        return f"{self.prefix}_expires"

    @classmethod
    def open(
        cls,
        client: Any,
        table: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        tombstone_table: str | None = None,
        tombstone_ttl_s: int = 14 * 86400,
        create: bool = True,
    ) -> TargetTable:
        try:
            desc = client.describe_table(TableName=table)["Table"]
        except client.exceptions.ResourceNotFoundException as exc:
            raise ConfigError(f"target table {table!r} does not exist") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise TransientApplyError(f"cannot reach the target table {table!r}: {exc}") from exc
        key_names = tuple(k["AttributeName"] for k in sorted(desc["KeySchema"], key=lambda k: k["KeyType"]))
        types = {d["AttributeName"]: d["AttributeType"] for d in desc["AttributeDefinitions"]}
        key_types = {name: types[name] for name in key_names}
        target = cls(client, table, key_names, key_types, tombstone_table or f"{table}-bridge-tombstones",
                     prefix, tombstone_ttl_s)
        target._ensure_tombstone_table(desc, create)
        return target

    def _ensure_tombstone_table(self, target_desc: dict[str, Any], create: bool) -> None:
        try:
            self.client.describe_table(TableName=self.tombstone_table)
            return
        except self.client.exceptions.ResourceNotFoundException:
            if not create:
                raise ConfigError(
                    f"tombstone table {self.tombstone_table!r} does not exist and --no-create was given"
                ) from None
        log.info("creating tombstone table %s", self.tombstone_table)
        self.client.create_table(
            TableName=self.tombstone_table,
            KeySchema=target_desc["KeySchema"],
            AttributeDefinitions=[
                {"AttributeName": n, "AttributeType": t} for n, t in self.key_types.items()
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        self.client.get_waiter("table_exists").wait(TableName=self.tombstone_table)
        self.client.update_time_to_live(
            TableName=self.tombstone_table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": self.expires_attr},
        )

    def key_of(self, change: Change) -> Image:
        keys = change.keys
        if set(keys) != set(self.key_names):
            raise PermanentApplyError(
                f"key schema mismatch: change has keys {sorted(keys)}, target {self.table!r} has"
                f" {list(self.key_names)}"
            )
        for name, kind in self.key_types.items():
            if kind not in keys[name]:
                raise PermanentApplyError(
                    f"key schema mismatch: {name} is {next(iter(keys[name]))} in the change,"
                    f" {kind} in target {self.table!r}"
                )
        return to_boto_image(keys)

    def _cond(self, v: str, op: str = "<") -> dict[str, Any]:
        expr = "attribute_not_exists(#v) OR #v < :v" if op == "<" else "#v = :v"
        return {"ConditionExpression": expr, "ExpressionAttributeNames": {"#v": self.version_attr},
                "ExpressionAttributeValues": {":v": {"S": v}}}

    def apply(self, change: Change) -> Outcome:
        key = self.key_of(change)
        v = change.version.encode()
        try:
            if change.op is Operation.PUT:
                return self._put(change, key, v)
            return self._delete(key, v)
        except NETWORK_ERRORS as exc:
            raise TransientApplyError(f"{type(exc).__name__}: {exc}") from exc

    def _put(self, change: Change, key: Image, v: str) -> Outcome:
        assert change.new_image is not None
        # Bridge attributes of an upstream replica must not leak into ours.
        item = to_boto_image(self.user_item(change.new_image))
        item[self.version_attr] = {"S": v}
        old = self._write(self.client.put_item, v, TableName=self.table, Item=item, ReturnValues="ALL_OLD",
                          ReturnValuesOnConditionCheckFailure="ALL_OLD", **self._cond(v))
        if isinstance(old, Outcome):
            return old
        if old:
            return Outcome.APPLIED  # replaced an older item: no newer delete can exist
        tomb = self._call(self.client.get_item, TableName=self.tombstone_table, Key=key,
                          ConsistentRead=True, ProjectionExpression="#v",
                          ExpressionAttributeNames={"#v": self.version_attr}).get("Item")
        if tomb and tomb[self.version_attr]["S"] > v:
            # An older write arrived after a newer delete: undo it, unless something newer replaced it.
            self._write(self.client.delete_item, v, TableName=self.table, Key=key, **self._cond(v, "="))
            log.debug("undid a put older than its tombstone")
            return Outcome.STALE
        return Outcome.APPLIED

    def _delete(self, key: Image, v: str) -> Outcome:
        tomb = dict(key)
        tomb[self.version_attr] = {"S": v}
        tomb[self.expires_attr] = {"N": str(int(time.time()) + self.tombstone_ttl_s)}
        tomb_result = self._write(self.client.put_item, v, TableName=self.tombstone_table, Item=tomb,
                                  ReturnValuesOnConditionCheckFailure="ALL_OLD", **self._cond(v))
        main = self._write(self.client.delete_item, v, TableName=self.table, Key=key, ReturnValues="ALL_OLD",
                           ReturnValuesOnConditionCheckFailure="ALL_OLD", **self._cond(v))
        if main is Outcome.STALE:
            return Outcome.STALE  # a newer item is there
        if tomb_result is Outcome.STALE:
            return Outcome.STALE  # a newer delete was applied before
        if tomb_result is Outcome.DUPLICATE and not main:
            return Outcome.DUPLICATE
        return Outcome.APPLIED

    def _write(self, fn: Any, v: str, **kwargs: Any) -> dict[str, Any] | Outcome:
        """A conditional write: the old item (may be empty), or DUPLICATE/STALE if refused."""
        try:
            return dict(self._call(fn, **kwargs).get("Attributes") or {})
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            held = (exc.response.get("Item") or {}).get(self.version_attr, {}).get("S")
            return Outcome.DUPLICATE if held == v else Outcome.STALE

    def _call(self, fn: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return dict(fn(**kwargs))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = exc.response.get("Error", {}).get("Message", str(exc))
            if code in TRANSIENT_CODES or status >= 500:
                raise TransientApplyError(f"{code}: {message}") from exc
            raise PermanentApplyError(f"{code}: {message}") from exc

    def user_item(self, item: Image) -> Image:
        """An item as users see it: bridge-owned attributes removed."""
        return {k: v for k, v in item.items() if not k.startswith(self.prefix)}
