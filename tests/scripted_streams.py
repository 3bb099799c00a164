"""A scripted, in-memory DynamoDB Streams client for the behaviours the emulator cannot produce.

moto's DynamoDB Streams has one fixed shard per stream: no shard splits and so no lineage, iterators
that never expire, and no trimming (see shared/reference/facts.md). Those are exactly the cases
:class:`bridge.source.streams.StreamReader` exists for, so they need a script: this is a mock only
where the real thing cannot exist here. Everything moto can do is tested against moto as well.

The script answers ``describe_stream`` / ``get_shard_iterator`` / ``get_records`` with the shapes boto3
returns (``datetime`` creation times, ``bytes`` binary, ``LastEvaluatedShardId`` paging, no
``NextShardIterator`` once a closed shard is read to its end) and raises the botocore exception
classes a real ``dynamodbstreams`` client raises (``ExpiredIteratorException``,
``TrimmedDataAccessException``, ...), built from the service model.

Sequence numbers start just below 10**21 so they grow from 21 to 22 digits early: comparing them as
strings instead of numbers shows up as a test failure.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import itertools
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3
from botocore.exceptions import ClientError

_TRIMMED = "TrimmedDataAccessException"
DEFAULT_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/scripted/stream/2024-01-01T00:00:00.000"


@cache
def _model_client() -> Any:
    # Only for its exception classes; it never sends a request.
    return boto3.client("dynamodbstreams", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def client_error(code: str, message: str, operation: str) -> ClientError:
    """The exception boto3 raises for an error response with this code."""
    cls = _model_client().exceptions.from_code(code)
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
    error: ClientError = cls(response, operation)
    return error


@dataclass
class ScriptedShard:
    shard_id: str
    parent_id: str | None
    starting: str
    records: list[dict[str, Any]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # numeric, for bisecting
    trimmed: int = 0  # records at the front no longer available
    ending: str | None = None  # EndingSequenceNumber once closed
    listed: bool = True  # False once trimmed away entirely


@dataclass
class _Iterator:
    shard_id: str
    position: int  # index of the next record in the shard's full history
    uses: int = 0  # GetRecords calls along this chain since GetShardIterator


class ScriptedStreams:
    """A ``dynamodbstreams`` client whose stream is built by the test: shards, records, splits, trims."""

    def __init__(
        self, stream_arn: str = DEFAULT_ARN, *, page_size: int = 100, expire_after_uses: int | None = None
    ) -> None:
        self.stream_arn = stream_arn
        self.page_size = page_size
        self.expire_after_uses = expire_after_uses  # an iterator chain expires after this many reads
        self.shards: dict[str, ScriptedShard] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._seq = itertools.count(10**21 - 3, 7)
        self._iterators: dict[str, _Iterator] = {}
        self._failures: list[tuple[str, str]] = []
        self._clock = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

    # -- building the script ----------------------------------------------------------------------

    def add_shard(self, shard_id: str, parent_id: str | None = None) -> None:
        self.shards[shard_id] = ScriptedShard(shard_id, parent_id, starting=str(next(self._seq)))

    def put(
        self,
        shard_id: str,
        keys: dict[str, Any],
        new: dict[str, Any] | None = None,
        old: dict[str, Any] | None = None,
        *,
        event: str | None = None,
        by_service: bool = False,
    ) -> dict[str, Any]:
        """Append one record (boto3 form) to an open shard and return it."""
        shard = self.shards[shard_id]
        assert shard.ending is None, f"{shard_id} is closed"
        seq = next(self._seq)
        self._clock += dt.timedelta(milliseconds=10)
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": self._clock,
            "Keys": keys,
            "SequenceNumber": str(seq),
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if new is not None:
            ddb["NewImage"] = new
        if old is not None:
            ddb["OldImage"] = old
        record: dict[str, Any] = {
            "eventID": uuid.uuid4().hex,
            "eventName": event or ("REMOVE" if new is None else "MODIFY" if old else "INSERT"),
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": ddb,
        }
        if by_service:
            record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
        shard.records.append(record)
        shard.seqs.append(seq)
        return record

    def close(self, shard_id: str) -> None:
        shard = self.shards[shard_id]
        shard.ending = shard.records[-1]["dynamodb"]["SequenceNumber"] if shard.records else shard.starting

    def split(self, shard_id: str, *children: str) -> None:
        """Close ``shard_id`` and open its children (DynamoDB usually opens two)."""
        self.close(shard_id)
        for child in children:
            self.add_shard(child, parent_id=shard_id)

    def trim(self, shard_id: str, count: int) -> None:
        """Make the oldest ``count`` more records of a shard unavailable."""
        shard = self.shards[shard_id]
        shard.trimmed = min(len(shard.records), shard.trimmed + count)

    def drop(self, shard_id: str) -> None:
        """The whole shard aged out: no longer listed, its records gone."""
        shard = self.shards[shard_id]
        shard.listed = False
        shard.trimmed = len(shard.records)

    def expire_iterators(self) -> None:
        """Every iterator handed out so far expires (as if 15 minutes passed)."""
        for token in self._iterators:
            self._iterators[token] = _Iterator("", -1)

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` (e.g. "GetRecords") raise this error code."""
        self._failures.extend([(operation, code)] * times)

    def records_of(self, shard_id: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.shards[shard_id].records)

    # -- the client API ---------------------------------------------------------------------------

    def describe_stream(
        self, *, StreamArn: str, ExclusiveStartShardId: str | None = None, Limit: int | None = None
    ) -> dict[str, Any]:
        self._called("DescribeStream", StreamArn=StreamArn, ExclusiveStartShardId=ExclusiveStartShardId)
        listed = [s for s in self.shards.values() if s.listed]
        start = 0
        if ExclusiveStartShardId is not None:
            start = next(i for i, s in enumerate(listed) if s.shard_id == ExclusiveStartShardId) + 1
        page = listed[start : start + (Limit or self.page_size)]
        description: dict[str, Any] = {
            "StreamArn": self.stream_arn,
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "Shards": [self._shard_info(s) for s in page],
        }
        if start + len(page) < len(listed):
            description["LastEvaluatedShardId"] = page[-1].shard_id
        return {"StreamDescription": description}

    def get_shard_iterator(
        self, *, StreamArn: str, ShardId: str, ShardIteratorType: str, SequenceNumber: str | None = None
    ) -> dict[str, Any]:
        op = "GetShardIterator"
        self._called(op, ShardId=ShardId, ShardIteratorType=ShardIteratorType, SequenceNumber=SequenceNumber)
        shard = self.shards.get(ShardId)
        if shard is None or not shard.listed:
            raise client_error("ResourceNotFoundException", f"Requested resource not found: {ShardId}", op)
        if ShardIteratorType == "TRIM_HORIZON":
            position = shard.trimmed
        elif ShardIteratorType == "LATEST":
            position = len(shard.records)
        else:
            assert SequenceNumber is not None
            finder = bisect.bisect_right if ShardIteratorType == "AFTER_SEQUENCE_NUMBER" else bisect.bisect_left
            position = finder(shard.seqs, int(SequenceNumber))
            if position < shard.trimmed:
                raise client_error(_TRIMMED, f"Sequence number {SequenceNumber} is beyond the trim horizon", op)
        return {"ShardIterator": self._token(_Iterator(ShardId, position))}

    def get_records(self, *, ShardIterator: str, Limit: int | None = None) -> dict[str, Any]:
        op = "GetRecords"
        state = self._iterators.get(ShardIterator)
        self._called(op, ShardId=state.shard_id if state else None, Limit=Limit)
        if state is None:
            raise client_error("ValidationException", "Invalid ShardIterator", op)
        if state.position < 0 or (self.expire_after_uses is not None and state.uses >= self.expire_after_uses):
            raise client_error("ExpiredIteratorException", "Iterator expired", op)
        shard = self.shards[state.shard_id]
        if state.position < shard.trimmed:
            raise client_error(_TRIMMED, "Attempted to access data that has been trimmed", op)
        end = min(len(shard.records), state.position + min(Limit or 1000, 1000))
        response: dict[str, Any] = {"Records": copy.deepcopy(shard.records[state.position : end])}
        if shard.ending is None or end < len(shard.records):
            response["NextShardIterator"] = self._token(_Iterator(shard.shard_id, end, state.uses + 1))
        return response

    # -- helpers ----------------------------------------------------------------------------------

    def _called(self, operation: str, **kwargs: Any) -> None:
        self.calls.append((operation, kwargs))
        for i, (failing, code) in enumerate(self._failures):
            if failing == operation:
                del self._failures[i]
                raise client_error(code, f"scripted {code}", operation)

    def _token(self, state: _Iterator) -> str:
        token = f"{self.stream_arn}|{state.shard_id}|{uuid.uuid4().hex}"
        self._iterators[token] = state
        return token

    @staticmethod
    def _shard_info(shard: ScriptedShard) -> dict[str, Any]:
        numbers = {"StartingSequenceNumber": shard.starting}
        if shard.ending is not None:
            numbers["EndingSequenceNumber"] = shard.ending
        info: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": numbers}
        if shard.parent_id is not None:
            info["ParentShardId"] = shard.parent_id
        return info
