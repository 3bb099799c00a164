"""A scripted, in-memory Kinesis client for the behaviours moto's server cannot produce.

moto 5.2's Kinesis (server mode) splits and merges shards in its listing, but keeps routing new
records to the closed parent (it picks the first shard, in creation order, whose hash range holds
the key) and never ends a closed shard (GetRecords always returns a NextShardIterator); its
iterators never expire; PutRecords never fails partially; its sequence numbers are 1, 2, 3...
Those are exactly the paths the Kinesis transport exists for, so they need a script: this is a
mock only where the real thing cannot exist here. Everything else is tested against moto.

Semantics follow the Kinesis API reference: a split or merge closes the parent(s)
(``EndingSequenceNumber``) and routes new records to the children; GetRecords on a closed shard
read to its end returns no ``NextShardIterator``; sequence numbers are 56 digits and grow;
``ListShards`` pages with ``NextToken``; errors are the botocore exception classes a real client
raises (built from the service model).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3
from botocore.exceptions import ClientError

MAX_HASH = 2**128 - 1
ARN = "arn:aws:kinesis:cn-north-1:123456789012:stream/scripted"


@cache
def _model_client() -> Any:
    # Only for its exception classes; it never sends a request.
    return boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def client_error(code: str, message: str, operation: str) -> ClientError:
    cls = _model_client().exceptions.from_code(code)
    error: ClientError = cls(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation
    )
    return error


@dataclass
class Shard:
    shard_id: str
    start_hash: int
    end_hash: int
    parents: tuple[str, ...] = ()
    records: list[dict[str, Any]] = field(default_factory=list)
    ending: str | None = None


class ScriptedKinesis:
    """A ``kinesis`` client over one stream whose shards the test splits and merges."""

    def __init__(self, shards: int = 1, *, page_size: int = 2, expire_after_uses: int | None = None) -> None:
        self.page_size = page_size
        self.expire_after_uses = expire_after_uses
        self.shards: dict[str, Shard] = {}
        self._ids = itertools.count()
        # 56 digits like real Kinesis sequence numbers: longer than DynamoDB Streams' 21-40.
        self._seq = itertools.count(49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000, 7)
        self._iterators: dict[str, tuple[str, int, int]] = {}  # token -> (shard, next index, uses)
        self.calls: list[str] = []
        self.throttle: set[str] = set()  # shards whose next GetRecords is throttled
        self.fail_puts: Callable[[int, dict[str, Any]], str | None] | None = None
        step = (MAX_HASH + 1) // shards
        for i in range(shards):
            self._new_shard(i * step, MAX_HASH if i == shards - 1 else (i + 1) * step - 1)

    def _new_shard(self, start: int, end: int, parents: tuple[str, ...] = ()) -> Shard:
        shard = Shard(f"shardId-{next(self._ids):012d}", start, end, parents)
        self.shards[shard.shard_id] = shard
        return shard

    # -- resharding --------------------------------------------------------------------------------

    def split(self, shard_id: str) -> tuple[str, str]:
        parent = self.shards[shard_id]
        assert parent.ending is None, "closed shards cannot be split"
        parent.ending = self._last_seq(parent)
        middle = (parent.start_hash + parent.end_hash) // 2
        a = self._new_shard(parent.start_hash, middle, (shard_id,))
        b = self._new_shard(middle + 1, parent.end_hash, (shard_id,))
        return a.shard_id, b.shard_id

    def merge(self, shard_id: str, adjacent_id: str) -> str:
        first, second = self.shards[shard_id], self.shards[adjacent_id]
        assert first.end_hash + 1 == second.start_hash
        for shard in (first, second):
            shard.ending = self._last_seq(shard)
        return self._new_shard(first.start_hash, second.end_hash, (shard_id, adjacent_id)).shard_id

    def _last_seq(self, shard: Shard) -> str:
        return shard.records[-1]["SequenceNumber"] if shard.records else str(next(self._seq))

    # -- the API -------------------------------------------------------------------------------------

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamName": StreamName, "StreamARN": ARN, "StreamStatus": "ACTIVE"}}

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(f"PutRecords:{len(Records)}")
        results: list[dict[str, Any]] = []
        for index, entry in enumerate(Records):
            code = self.fail_puts(index, entry) if self.fail_puts else None
            if code:
                results.append({"ErrorCode": code, "ErrorMessage": f"scripted {code}"})
                continue
            key_hash = int(hashlib.md5(entry["PartitionKey"].encode()).hexdigest(), 16)
            shard = next(s for s in self.shards.values() if s.ending is None and s.start_hash <= key_hash <= s.end_hash)
            seq = str(next(self._seq))
            shard.records.append(
                {
                    "SequenceNumber": seq,
                    "Data": bytes(entry["Data"]),
                    "PartitionKey": entry["PartitionKey"],
                    "ApproximateArrivalTimestamp": dt.datetime.now(dt.timezone.utc),
                }
            )
            results.append({"SequenceNumber": seq, "ShardId": shard.shard_id})
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}

    def list_shards(self, StreamName: str | None = None, NextToken: str | None = None) -> dict[str, Any]:
        assert (StreamName is None) != (NextToken is None), "ListShards takes StreamName or NextToken, not both"
        start = int(base64.b64decode(NextToken)) if NextToken else 0
        ids = list(self.shards)
        page = ids[start : start + self.page_size]
        response: dict[str, Any] = {"Shards": [self._describe(self.shards[s]) for s in page]}
        if start + self.page_size < len(ids):
            response["NextToken"] = base64.b64encode(str(start + self.page_size).encode()).decode()
        return response

    def _describe(self, shard: Shard) -> dict[str, Any]:
        info: dict[str, Any] = {
            "ShardId": shard.shard_id,
            "HashKeyRange": {"StartingHashKey": str(shard.start_hash), "EndingHashKey": str(shard.end_hash)},
            "SequenceNumberRange": {"StartingSequenceNumber": "0"},
        }
        if shard.ending is not None:
            info["SequenceNumberRange"]["EndingSequenceNumber"] = shard.ending
        for key, parent in zip(("ParentShardId", "AdjacentParentShardId"), shard.parents, strict=False):
            info[key] = parent
        return info

    def get_shard_iterator(
        self, StreamName: str, ShardId: str, ShardIteratorType: str, StartingSequenceNumber: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(f"GetShardIterator:{ShardId}:{ShardIteratorType}:{StartingSequenceNumber}")
        shard = self.shards[ShardId]
        if ShardIteratorType == "TRIM_HORIZON":
            index = 0
        elif ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            assert StartingSequenceNumber is not None
            index = sum(int(r["SequenceNumber"]) <= int(StartingSequenceNumber) for r in shard.records)
        else:
            raise AssertionError(f"the transport never asks for {ShardIteratorType}")
        return {"ShardIterator": self._token(ShardId, index, 0)}

    def _token(self, shard_id: str, index: int, uses: int) -> str:
        token = f"it-{len(self._iterators)}"
        self._iterators[token] = (shard_id, index, uses)
        return token

    def get_records(self, ShardIterator: str, Limit: int = 10_000) -> dict[str, Any]:
        shard_id, index, uses = self._iterators[ShardIterator]
        self.calls.append(f"GetRecords:{shard_id}")
        if shard_id in self.throttle:
            self.throttle.discard(shard_id)
            raise client_error("ProvisionedThroughputExceededException", "Rate exceeded for shard", "GetRecords")
        if self.expire_after_uses is not None and uses >= self.expire_after_uses:
            raise client_error("ExpiredIteratorException", "Iterator expired", "GetRecords")
        shard = self.shards[shard_id]
        records = shard.records[index : index + Limit]
        end = index + len(records)
        response: dict[str, Any] = {
            "Records": [dict(r) for r in records],
            "MillisBehindLatest": 0 if end == len(shard.records) else 1000,
        }
        if shard.ending is not None and end == len(shard.records):
            response["ChildShards"] = [
                {"ShardId": s.shard_id, "ParentShards": list(s.parents)}
                for s in self.shards.values()
                if shard_id in s.parents
            ]
        else:
            response["NextShardIterator"] = self._token(shard_id, end, uses + 1)
        return response
