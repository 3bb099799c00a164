"""Seed B's load-test workload, reproducibly: user profiles, and the stream records they make.

Seed B (the bi-directional replication solution) load-tested with user profiles: a uuid key,
about thirteen short string fields, a timestamp and the region that wrote it. Every value here
is a pure function of ``(seed, index)``, so any figure can be re-run on the same bytes, and a
100,000-record backlog can be served page by page without holding it in memory.

Items are in boto3 form; with no binary attributes that is also the wire form.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge.change import Change
from bridge.source.records import parse_record

KEY = "id"
TIMESTAMP = "last_update_timestamp"
REGION = "last_updater_region"
KEY_SCHEMA = ({"AttributeName": KEY, "KeyType": "HASH"},)
ATTRIBUTES = ({"AttributeName": KEY, "AttributeType": "S"},)
START = dt.datetime(2024, 5, 20, 8, 0, tzinfo=dt.timezone.utc)
FIRST_SEQ = 10**20  # 21 digits, as DynamoDB's

_FIRST = (
    "Wei",
    "Fang",
    "Lei",
    "Jing",
    "Min",
    "Hao",
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Ava",
    "Mateo",
    "Sofia",
    "Yuki",
    "Aarav",
    "Chloe",
    "Lucas",
    "Mia",
    "Ivan",
    "Zara",
    "Omar",
    "Lena",
    "Tom",
    "Ana",
)
_LAST = (
    "Wang",
    "Li",
    "Zhang",
    "Liu",
    "Chen",
    "Yang",
    "Smith",
    "Garcia",
    "Müller",
    "Kim",
    "Sato",
    "Silva",
    "Brown",
    "Nguyen",
    "Rossi",
    "Novak",
    "Khan",
    "Cohen",
    "Dubois",
    "Jensen",
)
_DOMAINS = ("example.com", "mail.example.cn", "corp.example.org", "example.net")
_CITIES = (
    ("Beijing", "CN"),
    ("Shanghai", "CN"),
    ("Ningxia", "CN"),
    ("Seattle", "US"),
    ("Dublin", "IE"),
    ("Frankfurt", "DE"),
    ("Tokyo", "JP"),
    ("Singapore", "SG"),
    ("São Paulo", "BR"),
    ("Sydney", "AU"),
)
_STREETS = ("Main St", "Chang'an Ave", "Harbour Rd", "Station Sq", "Park Lane", "Nanjing Rd", "Pine St")
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell")
_TITLES = ("engineer", "analyst", "manager", "designer", "director", "consultant", "operator")
_TIERS = ("free", "basic", "pro", "enterprise")
_LANGS = ("zh-CN", "en-US", "en-GB", "de-DE", "ja-JP", "pt-BR")
_STATUS = ("active", "active", "active", "pending", "suspended")


@dataclass(frozen=True)
class Op:
    """One source write: ``kind`` is INSERT, MODIFY or REMOVE; ``index`` names the profile."""

    kind: str
    index: int
    version: int  # how many times this profile was written before


class ProfileWorkload:
    """A reproducible stream of profile writes.

    ``modify_ratio`` of the writes rewrite an earlier profile (new timestamp, a few fields
    changed), ``delete_ratio`` delete one; the rest insert a new profile.
    """

    def __init__(
        self, seed: int = 7, region: str = "cn-north-1", modify_ratio: float = 0.2, delete_ratio: float = 0.0
    ) -> None:
        self.seed = seed
        self.region = region
        self.modify_ratio = modify_ratio
        self.delete_ratio = delete_ratio

    def key(self, index: int) -> str:
        return str(uuid.UUID(int=random.Random(f"{self.seed}/key/{index}").getrandbits(128), version=4))

    def item(self, index: int, version: int = 0, ts: float | None = None) -> dict[str, Any]:
        """Profile ``index`` as written for the ``version``-th time (boto3 form)."""
        rng = random.Random(f"{self.seed}/item/{index}")
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city, country = rng.choice(_CITIES)
        item = {
            KEY: self.key(index),
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}{rng.randrange(100)}@{rng.choice(_DOMAINS)}".lower(),
            "phone": f"+{rng.choice((86, 1, 49, 81))} {rng.randrange(10**9, 10**10)}",
            "birthday": f"{rng.randrange(1950, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "city": city,
            "country": country,
            "address": f"{rng.randrange(1, 999)} {rng.choice(_STREETS)}",
            "zip": f"{rng.randrange(10**5, 10**6)}",
            "company": rng.choice(_COMPANIES),
            "job_title": rng.choice(_TITLES),
            "tier": rng.choice(_TIERS),
            "language": rng.choice(_LANGS),
            "status": rng.choice(_STATUS),
        }
        if version:  # an update touches a few fields
            rng = random.Random(f"{self.seed}/update/{index}/{version}")
            item["status"] = rng.choice(_STATUS)
            item["tier"] = rng.choice(_TIERS)
            item["address"] = f"{rng.randrange(1, 999)} {rng.choice(_STREETS)}"
        when = ts if ts is not None else (START + dt.timedelta(seconds=index, microseconds=version)).timestamp()
        image: dict[str, Any] = {name: {"S": value} for name, value in item.items()}
        image[TIMESTAMP] = {"N": f"{when:.6f}"}
        image[REGION] = {"S": self.region}
        return image

    def op(self, position: int) -> Op:
        """Write number ``position``: what it is depends on nothing else."""
        rng = random.Random(f"{self.seed}/op/{position}")
        roll = rng.random()
        if position and roll < self.delete_ratio:
            return Op("REMOVE", rng.randrange(position), 1)
        if position and roll < self.delete_ratio + self.modify_ratio:
            return Op("MODIFY", rng.randrange(position), 1 + rng.randrange(1000))
        return Op("INSERT", position, 0)

    def ops(self, n: int, start: int = 0) -> Iterator[Op]:
        """Writes ``start`` .. ``start + n - 1``."""
        for position in range(start, start + n):
            yield self.op(position)

    def record(self, position: int, op: Op) -> dict[str, Any]:
        """The GetRecords-shaped stream record (boto3 form) write ``position`` makes."""
        seq = FIRST_SEQ + position
        new = self.item(op.index, op.version)
        keys = {KEY: new[KEY]}
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": START + dt.timedelta(seconds=position // 1000),
            "Keys": keys,
            "SequenceNumber": str(seq),
            "SizeBytes": 400,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if op.kind != "INSERT":
            ddb["OldImage"] = self.item(op.index, max(0, op.version - 1))
        if op.kind != "REMOVE":
            ddb["NewImage"] = new
        return {
            "eventID": f"{seq:032x}",
            "eventName": op.kind,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": ddb,
        }

    def records(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        return [self.record(start + i, op) for i, op in enumerate(self.ops(n, start))]

    def changes(self, n: int, start: int = 0, origin: str | None = None) -> list[Change]:
        """The changes bridge-publish makes of those records (parsed exactly as it parses them)."""
        return [
            parse_record(
                r, key_names=(KEY,), origin=origin or self.region, timestamp_attribute=TIMESTAMP, shard_id=SHARD_ID
            )
            for r in self.records(n, start)
        ]


SHARD_ID = "shardId-00000001716192000000-bench0001"


def seed_b_message(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """Seed B's Kinesis record for one change: ``str()`` of a dict as its data, and the partition key.

    Seed B sends ``str({'event_name': ..., 'new_image': ...})`` per change with the item's key as
    the partition key; Kinesis counts both against the payload.
    """
    ddb = record["dynamodb"]
    image = ddb.get("NewImage") or ddb.get("OldImage") or ddb["Keys"]
    data = str({"event_name": record["eventName"], "new_image": image}).encode()
    return data, str(ddb["Keys"][KEY]["S"]).encode()


class BacklogStreams:
    """A ``dynamodbstreams`` client serving a closed one-shard stream of ``n`` workload records.

    For the memory figure: a 100,000-record backlog on the emulator would take ~15 minutes to
    write, and what is measured is the publisher, not where the records wait. Pages are generated
    on request, so the client holds none of the backlog.
    """

    ARN = "arn:aws:dynamodb:cn-north-1:123456789012:table/profiles/stream/2024-05-20T08:00:00.000"

    def __init__(self, workload: ProfileWorkload, n: int) -> None:
        self.workload = workload
        self.n = n

    def describe_stream(self, *, StreamArn: str, **_: Any) -> dict[str, Any]:
        shard = {
            "ShardId": SHARD_ID,
            "SequenceNumberRange": {
                "StartingSequenceNumber": str(FIRST_SEQ),
                "EndingSequenceNumber": str(FIRST_SEQ + self.n - 1),
            },
        }
        return {
            "StreamDescription": {
                "StreamArn": StreamArn,
                "StreamStatus": "ENABLED",
                "StreamViewType": "NEW_AND_OLD_IMAGES",
                "Shards": [shard],
            }
        }

    def get_shard_iterator(
        self, *, ShardIteratorType: str, SequenceNumber: str | None = None, **_: Any
    ) -> dict[str, Any]:
        position = 0
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER" and SequenceNumber is not None:
            position = int(SequenceNumber) - FIRST_SEQ + 1
        elif ShardIteratorType == "AT_SEQUENCE_NUMBER" and SequenceNumber is not None:
            position = int(SequenceNumber) - FIRST_SEQ
        elif ShardIteratorType == "LATEST":
            position = self.n
        return {"ShardIterator": str(position)}

    def get_records(self, *, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:
        start = int(ShardIterator)
        end = min(self.n, start + min(Limit, 1000))
        records = [self.workload.record(p, self.workload.op(p)) for p in range(start, end)]
        response: dict[str, Any] = {"Records": records}
        if end < self.n:
            response["NextShardIterator"] = str(end)
        return response
