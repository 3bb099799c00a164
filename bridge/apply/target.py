"""Writing one change to the target table: last writer wins, with tombstones.

Plain conditional writes, no transactions (which cost twice the write capacity on AWS):

* put:    PutItem if the stored version is older or absent. When that created a new
          item (no old image came back), or found its very version already there (a
          redelivery: the first attempt's check may have been cut short), the put is
          *unsettled*: its key's tombstone must be read (consistent) after the put, and if
          it holds a newer delete, the item deleted again on condition it is older than
          that tombstone. Those reads are batched: :meth:`TargetTable.start` makes the
          write, :meth:`TargetTable.read_tombstones` reads the tombstones of many
          unsettled puts with BatchGetItem (100 keys a call), :meth:`TargetTable.settle`
          decides each. So an insert costs one write and 1/100 of a read; an update one
          write.
* delete: read the item; if older or absent, write the tombstone (adding the fingerprint
          of the item about to go to its set), then DeleteItem conditional on the item being exactly
          the one read. A crash between the two is finished by the redelivery. A delete
          costs one read and two writes.

The tombstone lives in a companion table so users' reads never see it. The order
"tombstone before delete" and "put before tombstone read" means an older write that
arrives after a newer delete never survives; it may be visible for the milliseconds
between its put and its undo (docs/consistency.md). The undo is conditional on the item
being older than the tombstone, not on being exactly the put's item: a second older put
that replaced the first before its undo (it saw an old image, so it reads nothing) is
removed by the first one's undo. The version (see
:class:`bridge.change.Version`) is stored as one sortable string, so a single ``<``
compares timestamp, origin and sequence number in that order.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions
import orjson

from bridge.apply.itemsize import ITEM_LIMIT_BYTES, WRITE_TOKEN_CHARS, item_size
from bridge.apply.keep import Keep
from bridge.aws.errors import ErrorClass, classify, describe
from bridge.change import Change, Image, Operation, Outcome, fingerprint, from_boto_image, to_boto_image
from bridge.errors import ConfigError, ItemTooLargeError, PermanentApplyError, SystemicError, TransientApplyError
from bridge.transport.backoff import Backoff

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "_bridge"
#: BatchGetItem takes at most 100 keys a call.
BATCH_GET_KEYS = 100
#: Calls a BatchGetItem may take to have all its keys processed before the read counts as failed.
UNPROCESSED_ATTEMPTS = 8
KeyId = tuple[tuple[str, str, Any], ...]


@dataclass(frozen=True)
class Unsettled:
    """A put whose outcome depends on its key's tombstone, to be read after the put.

    ``outcome`` is what the put is if the tombstone is absent or not newer: APPLIED (it created
    the item) or DUPLICATE (its version was already there: a redelivery, perhaps of a put whose
    check a crash cut short). What the table held after the put is kept small, since a whole
    receive's puts wait for their reads: the write token the put set (the item is rebuilt from the
    change if it must be undone), or for a duplicate the item found (boto form).
    """

    change: Change
    key: Image
    v: str
    outcome: Outcome
    token: str = ""
    held: Image | None = None


class EchoCounter:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()  # appliers call apply() from several threads

    def add(self) -> None:
        with self._lock:
            self.count += 1


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
    local_origin: str | None = None
    item_limit: int = ITEM_LIMIT_BYTES  # DynamoDB's; tests set the emulator's
    # Changes that came back to where they were written: echo traffic, 0 when loops are
    # prevented (still applied: last-writer-wins makes them duplicates or stale).
    echo_counter: EchoCounter = field(default_factory=EchoCounter, compare=False)
    create: bool = True  # may the tombstone table be created (again, by a probe)?
    keep: Keep | None = None  # exclude_mode keep: attributes a put leaves as the target holds them

    @property
    def echoes(self) -> int:
        return self.echo_counter.count

    @property
    def version_attr(self) -> str:
        return f"{self.prefix}_v"

    @property
    def expires_attr(self) -> str:
        return f"{self.prefix}_expires"

    @property
    def write_attr(self) -> str:
        """A fresh token on every item the bridge writes: how its own writes are told apart in the
        stream (an application UpdateItem keeps the token, a PutItem drops it)."""
        return f"{self.prefix}_w"

    @property
    def deleted_attr(self) -> str:
        """On a tombstone: the fingerprints (a string set) of the items the bridge removed."""
        return f"{self.prefix}_deleted"

    def tombstone(self, keys: Image) -> dict[str, Any] | None:
        """The tombstone of an item (boto form), read strongly consistent."""
        return self._call(
            self.client.get_item, TableName=self.tombstone_table, Key=self.key_of_keys(keys), ConsistentRead=True
        ).get("Item")

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
        local_origin: str | None = None,
        keep: tuple[list[str] | None, list[str] | None] | None = None,
    ) -> TargetTable:
        """``keep``: (exclude_attributes, include_attributes) whose target values puts keep."""
        _put_answers_unparsed(client)
        try:
            desc = client.describe_table(TableName=table)["Table"]
        except client.exceptions.ResourceNotFoundException as exc:
            raise ConfigError(f"target table {table!r} does not exist") from exc
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if classify(exc) is ErrorClass.SYSTEMIC:
                raise SystemicError(f"cannot describe the target table {table!r}: {describe(exc)}") from exc
            raise TransientApplyError(f"cannot reach the target table {table!r}: {describe(exc)}") from exc
        key_names, key_types = _key_schema(desc)
        kept = None
        if keep is not None:
            named = sorted(set(key_names) & set(keep[0] or ()))
            if named:
                raise ConfigError(
                    f"exclude_attributes names key attribute {', '.join(named)} of table {table!r}:"
                    " key attributes cannot be excluded"
                )
            kept = Keep.of(keep[0], keep[1], key_names, prefix)
        target = cls(
            client,
            table,
            key_names,
            key_types,
            tombstone_table or f"{table}-bridge-tombstones",
            prefix,
            tombstone_ttl_s,
            local_origin,
            create=create,
            keep=kept,
        )
        target._ensure_tombstone_table(desc, create)
        return target

    def check(self) -> None:
        """The probe of a paused line: the table is there (its key schema learnt anew: it may have
        been recreated right) and so is the tombstone table (created again if allowed).
        Raises SystemicError while the cause of the pause is visible from here."""
        try:
            desc = self.client.describe_table(TableName=self.table)["Table"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if classify(exc) is ErrorClass.SYSTEMIC:
                raise SystemicError(f"target table {self.table!r}: {describe(exc)}") from exc
            raise TransientApplyError(f"cannot reach the target table {self.table!r}: {describe(exc)}") from exc
        if desc.get("TableStatus") not in (None, "ACTIVE", "UPDATING"):
            raise SystemicError(f"target table {self.table!r} is {desc.get('TableStatus')}")
        key_names, key_types = _key_schema(desc)
        if (key_names, key_types) != (self.key_names, self.key_types):
            log.warning("target table %s now has key schema %s", self.table, key_types)
            # Frozen for everyone else; the key schema is the one thing a probe may learn anew.
            object.__setattr__(self, "key_names", key_names)
            object.__setattr__(self, "key_types", key_types)
        try:
            self._ensure_tombstone_table(desc, self.create, check_ttl=False)  # a probe every 5 s: warn at start only
        except ConfigError as exc:
            raise SystemicError(str(exc)) from exc
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if classify(exc) is ErrorClass.SYSTEMIC:
                raise SystemicError(f"tombstone table {self.tombstone_table!r}: {describe(exc)}") from exc
            raise TransientApplyError(f"tombstone table {self.tombstone_table!r}: {describe(exc)}") from exc

    def _ensure_tombstone_table(self, target_desc: dict[str, Any], create: bool, *, check_ttl: bool = True) -> None:
        try:
            self.client.describe_table(TableName=self.tombstone_table)
            if not check_ttl:
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
                AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in self.key_types.items()],
                BillingMode="PAY_PER_REQUEST",
            )
            self.client.get_waiter("table_exists").wait(TableName=self.tombstone_table)
        self._ensure_ttl()

    def _ensure_ttl(self) -> None:
        """Checked on every start, not only when the table is created, so a start after a refused
        attempt says the same thing again instead of going on silently.

        Refused (no ``dynamodb:UpdateTimeToLive``, or a store without TTL): warn and go on. Tombstones
        that never expire cost storage, never correctness (an old tombstone still only beats older
        writes), so stopping replication over it would trade data freshness for housekeeping.
        """
        action = "dynamodb:DescribeTimeToLive"
        try:
            ttl = self.client.describe_time_to_live(TableName=self.tombstone_table).get("TimeToLiveDescription", {})
            if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
                return
            action = "dynamodb:UpdateTimeToLive"
            self.client.update_time_to_live(
                TableName=self.tombstone_table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": self.expires_attr},
            )
            log.info("enabled TTL on %s (attribute %s)", self.tombstone_table, self.expires_attr)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if classify(exc) not in (ErrorClass.SYSTEMIC, ErrorClass.PERMANENT):
                raise TransientApplyError(f"{action} on {self.tombstone_table!r}: {describe(exc)}") from exc
            log.warning(
                "cannot enable TTL on tombstone table %s: %s refused (%s); going on, but tombstones will not"
                " expire until TTL on attribute %s is enabled",
                self.tombstone_table,
                action,
                describe(exc),
                self.expires_attr,
            )

    def key_of(self, change: Change) -> Image:
        return self.key_of_keys(change.keys)

    def key_of_keys(self, keys: Image) -> Image:
        # Every change of a source table has its key schema: a mismatch concerns all of them.
        if set(keys) != set(self.key_names):
            raise SystemicError(
                f"key schema mismatch: change has keys {sorted(keys)}, target {self.table!r} has {list(self.key_names)}"
            )
        for name, kind in self.key_types.items():
            if kind not in keys[name]:
                raise SystemicError(
                    f"key schema mismatch: {name} is {next(iter(keys[name]))} in the change,"
                    f" {kind} in target {self.table!r}"
                )
        return to_boto_image(keys)

    def _cond(self, v: str | None, op: str = "<") -> dict[str, Any]:
        """Condition on the stored version: older-or-absent (``<``, ``<=``), exactly ``v`` (``=``), or absent."""
        names = {"ExpressionAttributeNames": {"#v": self.version_attr}}
        if v is None:
            return {"ConditionExpression": "attribute_not_exists(#v)", **names}
        expr = "#v = :v" if op == "=" else f"attribute_not_exists(#v) OR #v {op} :v"
        return {"ConditionExpression": expr, **names, "ExpressionAttributeValues": {":v": {"S": v}}}

    def apply(self, change: Change, *, repair: bool = False) -> Outcome:
        """Apply one change, last writer wins (a put's tombstone read on its own: see :meth:`start`).

        ``repair``: the item may carry this very version with other content (an
        application UpdateItem keeps ``_bridge_v``): rewrite it even at an equal version.
        """
        result = self.start(change, repair=repair)
        if isinstance(result, Unsettled):
            return self.settle(result, self.read_tombstones([result.key]).get(self.key_id(result.key)))
        return result

    def start(self, change: Change, *, repair: bool = False) -> Outcome | Unsettled:
        """Make a change's writes. A put that created its item (or found its own version) comes
        back :class:`Unsettled`: its outcome is known once :meth:`settle` saw its key's tombstone,
        read by :meth:`read_tombstones` *after* this call returned."""
        key = self.key_of(change)
        if change.version.origin == self.local_origin:
            self.echo_counter.add()
        v = change.version.encode()
        if change.op is Operation.PUT:
            return self._put(change, key, v, "<=" if repair else "<")
        return self._delete(key, v)

    def _put(self, change: Change, key: Image, v: str, op: str = "<") -> Outcome | Unsettled:
        assert change.new_image is not None
        token = uuid.uuid4().hex[:WRITE_TOKEN_CHARS]
        item = self._item(change, v, token)
        if self.keep is not None:
            return self._put_keeping(change, item, key, v, op, token)
        self._refuse_oversize(item)
        try:
            old = self._call(
                self.client.put_item,
                TableName=self.table,
                Item=item,
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **self._cond(v, op),
            ).get("Attributes")
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            held = dict(exc.response.get("Item") or {})
            if held.get(self.version_attr, {}).get("S") != v:
                return Outcome.STALE
            # Our version is there: a redelivery. Its first attempt may have died between the put
            # and the tombstone read, so the read is made again (duplicates are rare: cheap).
            return Unsettled(change, key, v, Outcome.DUPLICATE, held=held)
        if old:
            return Outcome.APPLIED  # replaced an older item, whose creator reads the tombstone
        return Unsettled(change, key, v, Outcome.APPLIED, token=token)

    def _item(self, change: Change, v: str, token: str) -> Image:
        """The item (boto form) a put of ``change`` at version ``v`` with write token ``token`` writes."""
        assert change.new_image is not None
        # Bridge attributes of an upstream replica must not leak into ours.
        item = to_boto_image(self.user_item(change.new_image))
        item[self.version_attr] = {"S": v}
        item[self.write_attr] = {"S": token}
        return item

    def key_id(self, key: Image) -> KeyId:
        """A hashable name of a key (boto form): to match BatchGetItem's answers to their keys."""
        return tuple((name, *next(iter(key[name].items()))) for name in self.key_names)

    def read_tombstones(self, keys: list[Image]) -> dict[KeyId, str]:
        """The tombstone versions of ``keys`` (boto form) that have one, read strongly consistent,
        100 keys a BatchGetItem; keys DynamoDB leaves unprocessed are asked again with backoff."""
        unique = list({self.key_id(k): k for k in keys}.values())  # BatchGetItem refuses repeated keys
        names = {"#v": self.version_attr, **{f"#k{i}": name for i, name in enumerate(self.key_names)}}
        found: dict[KeyId, str] = {}
        for i in range(0, len(unique), BATCH_GET_KEYS):
            request: dict[str, Any] = {
                self.tombstone_table: {
                    "Keys": unique[i : i + BATCH_GET_KEYS],
                    "ConsistentRead": True,
                    "ProjectionExpression": ", ".join(names),
                    "ExpressionAttributeNames": names,
                }
            }
            attempt = 0
            while request:
                answer = self._call(self.client.batch_get_item, RequestItems=request)
                for tomb in answer.get("Responses", {}).get(self.tombstone_table, []):
                    version = tomb.get(self.version_attr, {}).get("S")
                    if version is not None:
                        found[self.key_id(tomb)] = version
                request = answer.get("UnprocessedKeys") or {}
                if request:
                    attempt += 1
                    if attempt >= UNPROCESSED_ATTEMPTS:
                        left = len(request[self.tombstone_table]["Keys"])
                        raise TransientApplyError(
                            f"{self.tombstone_table}: {left} tombstone reads still unprocessed after {attempt} calls"
                        )
                    time.sleep(_UNPROCESSED_BACKOFF.delay(attempt))
        return found

    def settle(self, put: Unsettled, tombstone_v: str | None) -> Outcome:
        """The outcome of an unsettled put, given its key's tombstone version read after it."""
        if tombstone_v is None or tombstone_v <= put.v:
            return put.outcome
        # An older write arrived after a newer delete: undo it. The undo is a REMOVE in our
        # stream too: record it as the bridge's first. Conditional on the item being older than
        # the tombstone (not on being exactly ours): an older put that replaced ours meanwhile
        # read no tombstone (it saw an old image) and must go too; a newer one stays.
        item = put.held if put.held is not None else self._item(put.change, put.v, put.token)
        fp = fingerprint(from_boto_image(item))
        self._remember_deleted(put.key, fp)
        try:
            gone = self._call(
                self.client.delete_item,
                TableName=self.table,
                Key=put.key,
                ReturnValues="ALL_OLD",
                ConditionExpression="#v < :t",
                ExpressionAttributeNames={"#v": self.version_attr},
                ExpressionAttributeValues={":t": {"S": tombstone_v}},
            ).get("Attributes")
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            gone = None  # already gone, or replaced by something newer than the delete
        if gone and fingerprint(from_boto_image(gone)) != fp:
            self._remember_deleted(put.key, fingerprint(from_boto_image(gone)))  # what really went
        log.debug("undid a put older than its tombstone")
        return Outcome.STALE

    def _put_keeping(self, change: Change, item: Image, key: Image, v: str, op: str, token: str) -> Outcome | Unsettled:
        """The put of ``exclude_mode: keep`` (:mod:`bridge.apply.keep`): the target's kept attributes are
        read, written back with the item, and the put is conditional on them being unchanged. Like
        :meth:`_put`, a put that created its item or found its own version is unsettled."""
        assert self.keep is not None
        for _ in range(5):
            current = self._call(self.client.get_item, TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            held = (current or {}).get(self.version_attr, {}).get("S")
            if held is not None and (held > v or (held == v and op == "<")):
                if held == v:  # a redelivery: its first attempt's tombstone read may have been cut short
                    return Unsettled(change, key, v, Outcome.DUPLICATE, held=dict(current or {}))
                return Outcome.STALE
            merged = self.keep.merge(item, current)
            self._refuse_oversize(merged)
            version = self._cond(v, op)
            kept_expr, kept_names, kept_values = self.keep.condition(current)
            expr = f"({version['ConditionExpression']})" + (f" AND {kept_expr}" if kept_expr else "")
            values = {**version.get("ExpressionAttributeValues", {}), **kept_values}
            try:
                old = self._call(
                    self.client.put_item,
                    TableName=self.table,
                    Item=merged,
                    ReturnValues="ALL_OLD",
                    ConditionExpression=expr,
                    ExpressionAttributeNames={**version["ExpressionAttributeNames"], **kept_names},
                    **({"ExpressionAttributeValues": values} if values else {}),
                ).get("Attributes")
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                continue  # the version or a kept attribute changed since the read: decide again
            if old:
                return Outcome.APPLIED  # replaced an older item, whose creator reads the tombstone
            # Created: nothing was there to keep, so what was written is the change's own item.
            return Unsettled(change, key, v, Outcome.APPLIED, token=token)
        raise TransientApplyError("the item's kept attributes kept changing while it was being written; will retry")

    def _refuse_oversize(self, item: Image) -> None:
        size = item_size(item)
        if size > self.item_limit:
            own = item_size({k: item[k] for k in (self.version_attr, self.write_attr)})
            raise ItemTooLargeError(
                f"item is {size - own} bytes, {size} with the bridge's {own} bytes of attributes: over "
                f"DynamoDB's {self.item_limit}-byte item limit by {size - self.item_limit} (an item needs "
                f"{own} bytes of headroom below the limit to replicate)"
            )

    def _delete(self, key: Image, v: str) -> Outcome:
        for _ in range(5):
            current = self._call(self.client.get_item, TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            held = current.get(self.version_attr, {}).get("S") if current else None
            if held is not None and held >= v:
                return Outcome.STALE
            # The fingerprint of what we are about to delete lets our own stream reader
            # recognise this REMOVE as the bridge's (active-active: never echo it).
            fp = fingerprint(from_boto_image(current)) if current else None
            cond = self._cond(v)
            update = "SET #v = :v, #e = :e"
            values = {**cond["ExpressionAttributeValues"], ":e": {"N": str(int(time.time()) + self.tombstone_ttl_s)}}
            if fp:
                update += " ADD #d :d"
                values[":d"] = {"SS": [fp]}
            written = self._write(
                self.client.update_item,
                v,
                TableName=self.tombstone_table,
                Key=key,
                UpdateExpression=update,
                ConditionExpression=cond["ConditionExpression"],
                ExpressionAttributeValues=values,
                ExpressionAttributeNames={
                    "#v": self.version_attr,
                    "#e": self.expires_attr,
                    **({"#d": self.deleted_attr} if fp else {}),
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if written is Outcome.STALE:
                return Outcome.STALE  # a newer delete was applied before
            if current is None:
                return Outcome.DUPLICATE if written is Outcome.DUPLICATE else Outcome.APPLIED
            if written is Outcome.DUPLICATE and fp:
                self._remember_deleted(key, fp)  # a redelivery finishing a delete cut short by a crash
            old = self._write(
                self.client.delete_item,
                v,
                TableName=self.table,
                Key=key,
                ReturnValues="ALL_OLD",
                **self._cond(held, "="),
            )
            if isinstance(old, Outcome):
                continue  # the item changed since we read it: decide again
            if old and fingerprint(from_boto_image(old)) != fp:
                # an application update slipped in between read and delete: record what really went
                self._remember_deleted(key, fingerprint(from_boto_image(old)))
            # The tombstone already held this delete: a redelivery, finishing what a crash cut short or
            # removing an older put of the same receive whose own undo waits for the batched read.
            return Outcome.DUPLICATE if written is Outcome.DUPLICATE else Outcome.APPLIED
        raise TransientApplyError("the item kept changing while it was being deleted; will retry")

    def _remember_deleted(self, key: Image, fp: str) -> None:
        self._call(
            self.client.update_item,
            TableName=self.tombstone_table,
            Key=key,
            UpdateExpression="ADD #d :d",
            ExpressionAttributeNames={"#d": self.deleted_attr},
            ExpressionAttributeValues={":d": {"SS": [fp]}},
        )

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
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and (
                exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
            ):
                raise
            kind = classify(exc)
            if kind is ErrorClass.SYSTEMIC:
                raise SystemicError(f"{kwargs.get('TableName', self.table)}: {describe(exc)}") from exc
            if kind is ErrorClass.PERMANENT and "item size" in describe(exc).lower():
                # The size rules above are DynamoDB's documented ones; this catches what they miss.
                raise ItemTooLargeError(describe(exc)) from exc
            if kind is ErrorClass.PERMANENT:
                raise PermanentApplyError(describe(exc)) from exc
            raise TransientApplyError(describe(exc)) from exc

    def user_item(self, item: Image) -> Image:
        """An item as users see it: bridge-owned attributes removed."""
        return {k: v for k, v in item.items() if not k.startswith(self.prefix)}


_UNPROCESSED_BACKOFF = Backoff(initial_s=0.05, max_s=2.0)


def _put_answers_unparsed(client: Any) -> None:
    """PutItem answers as JSON, not through botocore's typed parsing (a ``before-parse`` handler).

    A put needs ``ReturnValues=ALL_OLD`` only to learn *whether* it replaced an item (then no
    tombstone read is needed); botocore would type every attribute of that old item against the
    service model, which cost ~15% of the applier's CPU per update. orjson parses the answer
    instead and the old item comes back in wire form (binary as base64 text), which is all
    :meth:`TargetTable._put` looks at. Errors (the refused conditions among them) and everything
    else (signing, retries, endpoints) stay botocore's.
    """
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None and hasattr(events, "register"):
        events.register("before-parse.dynamodb.PutItem", _take_put_answer, unique_id="ddb-bridge-put-answer")


def _take_put_answer(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    body = response_dict.get("body")
    if not body or not 200 <= response_dict.get("status_code", 0) < 300:
        return
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # botocore fails on it as it always did
    if isinstance(answer, dict):
        response_dict["body"] = b"{}"
        customized_response_dict.update(answer)


def _key_schema(desc: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Key attribute names (hash, range) and their types from a DescribeTable answer."""
    key_names = tuple(k["AttributeName"] for k in sorted(desc["KeySchema"], key=lambda k: k["KeyType"]))
    types = {d["AttributeName"]: d["AttributeType"] for d in desc["AttributeDefinitions"]}
    return key_names, {name: types[name] for name in key_names}
