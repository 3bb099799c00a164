"""A seeded, reproducible workload: inserts, updates and deletes over every attribute type.

Used by ``bridge demo``, the integration tests and ``bridge bench``. Items are kept in
boto3 form (binary as bytes) because they are written with boto3.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

TABLE_KEYS = ({"AttributeName": "tenant", "KeyType": "HASH"}, {"AttributeName": "user_id", "KeyType": "RANGE"})
TABLE_ATTRS = ({"AttributeName": "tenant", "AttributeType": "S"}, {"AttributeName": "user_id", "AttributeType": "N"})


@dataclass(frozen=True)
class Op:
    kind: str  # "put" | "update" | "delete"
    key: dict[str, Any]
    item: dict[str, Any] | None = None  # for put
    update: dict[str, Any] | None = None  # kwargs for update_item


def create_table(
    client: Any, name: str, *, stream: bool = True, key_schema: Any = TABLE_KEYS, attributes: Any = TABLE_ATTRS
) -> None:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": list(key_schema),
        "AttributeDefinitions": list(attributes),
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    client.create_table(**kwargs)
    client.get_waiter("table_exists").wait(TableName=name)


class Workload:
    """``ops(n)`` yields a mix over a key space; ``rng`` makes it reproducible."""

    def __init__(
        self, seed: int = 7, keys: int = 100, timestamp_attribute: str | None = "updated_at", big_item_every: int = 0
    ) -> None:
        self.rng = random.Random(seed)
        self.keys = keys
        self.timestamp_attribute = timestamp_attribute
        self.big_item_every = big_item_every
        self.live: set[tuple[str, int]] = set()
        self._n = 0

    def key(self) -> tuple[str, int]:
        return (f"tenant-{self.rng.randrange(4)}", self.rng.randrange(self.keys))

    def item(self, key: tuple[str, int]) -> dict[str, Any]:
        rng = self.rng
        item: dict[str, Any] = {
            "tenant": {"S": key[0]},
            "user_id": {"N": str(key[1])},
            "name": {"S": f"user {rng.randrange(10**6)} ünïcødé"},
            "score": {"N": str(Decimal(rng.randrange(-(10**6), 10**6)) / 100)},
            "avatar": {"B": rng.randbytes(rng.randrange(1, 64))},
            "tags": {"SS": sorted({f"t{rng.randrange(20)}" for _ in range(rng.randrange(1, 5))})},
            "lucky": {"NS": sorted({str(rng.randrange(100)) for _ in range(rng.randrange(1, 4))})},
            "keys": {"BS": [rng.randbytes(8) for _ in range(rng.randrange(1, 3))]},
            "profile": {
                "M": {
                    "city": {"S": rng.choice(["Beijing", "Seattle", "Ningxia"])},
                    "age": {"N": str(rng.randrange(18, 90))},
                    "history": {"L": [{"N": str(rng.randrange(9))}, {"BOOL": rng.random() < 0.5}]},
                }
            },
            "flags": {"L": [{"BOOL": True}, {"NULL": True}, {"S": "x"}]},
            "active": {"BOOL": rng.random() < 0.5},
            "nothing": {"NULL": True},
        }
        if self.big_item_every and self._n % self.big_item_every == 0:
            # near DynamoDB's 400 KB item limit, incompressible on purpose
            item["blob"] = {"B": rng.randbytes(390_000)}
        if self.timestamp_attribute:
            item[self.timestamp_attribute] = {"N": f"{time.time():.6f}"}
        return item

    def ops(self, n: int) -> Iterator[Op]:
        for _ in range(n):
            self._n += 1
            key = self.key()
            kd = {"tenant": {"S": key[0]}, "user_id": {"N": str(key[1])}}
            roll = self.rng.random()
            if key in self.live and roll < 0.2:
                self.live.discard(key)
                yield Op("delete", kd)
            elif key in self.live and roll < 0.5:
                values: dict[str, Any] = {":s": {"N": str(self.rng.randrange(1000))}, ":n": {"S": "renamed"}}
                expr = "SET score = :s, #n = :n"
                if self.timestamp_attribute:
                    expr += ", #t = :t"
                    values[":t"] = {"N": f"{time.time():.6f}"}
                names = {"#n": "name", **({"#t": self.timestamp_attribute} if self.timestamp_attribute else {})}
                yield Op(
                    "update",
                    kd,
                    update={
                        "UpdateExpression": expr,
                        "ExpressionAttributeValues": values,
                        "ExpressionAttributeNames": names,
                    },
                )
            else:
                self.live.add(key)
                yield Op("put", kd, item=self.item(key))


def run_op(client: Any, table: str, op: Op) -> None:
    if op.kind == "put":
        client.put_item(TableName=table, Item=op.item)
    elif op.kind == "update":
        client.update_item(TableName=table, Key=op.key, **(op.update or {}))
    else:
        client.delete_item(TableName=table, Key=op.key)
