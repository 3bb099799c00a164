"""``python -m bridge.bench.stub``: a DynamoDB and DynamoDB Streams endpoint that answers at once.

For the CPU figures (``bridge.bench.cpu``): what they measure is the CPU the bridge's own process
spends per change, against a baseline loop's, so the endpoint must cost the client nothing but
the protocol, and must run in a process of its own so that its CPU is not counted. moto would
do, but it spends milliseconds of Python per call (the figures would mostly wait), so this
answers valid JSON in the shapes the services send, from memory:

* DynamoDB (``X-Amz-Target: DynamoDB_20120810.*``): DescribeTable (any name exists, keyed on the
  workload's ``id``), DescribeTimeToLive (enabled), PutItem (stored; ``ReturnValues=ALL_OLD``
  returns the item it replaced), GetItem, BatchGetItem (every key answered, none left
  unprocessed), UpdateItem, DeleteItem. Conditions are **not evaluated**: every write succeeds.
* DynamoDB Streams (``DynamoDBStreams_20120810.*``): one closed shard holding ``--records`` records
  of ``ProfileWorkload(seed=--seed)`` as GetRecords sends them on the wire (typed attribute
  values, ``ApproximateCreationDateTime`` in epoch seconds); pages are built once and kept.

Written by hand (on :mod:`http.server`) because no installed library serves these two APIs
without doing the work moto does; it is a benchmark fixture, not a DynamoDB.
It prints ``{"port": N}`` on one line once it listens, and serves until stdin closes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
import orjson

from bridge.bench.workloads import FIRST_SEQ, KEY, SHARD_ID, ProfileWorkload

STREAM_ARN = "arn:aws:dynamodb:us-west-2:123456789012:table/profiles/stream/2024-05-20T08:00:00.000"


class Stub:
    """The state behind the endpoint: items by (table, key), the stream's pages."""

    def __init__(self, records: int, seed: int) -> None:
        self.records = records
        self.workload = ProfileWorkload(seed=seed)
        self.items: dict[tuple[str, bytes], Any] = {}
        self.pages: dict[tuple[int, int], bytes] = {}
        self.lock = threading.Lock()
        # PutItems per table and the times of the first and last (apply_scaling reads them with
        # ``Stub.Stats``: the applier's own start-up and idle wait stay out of its throughput).
        self.puts: dict[str, list[float]] = {}

    def answer(self, target: str, body: dict[str, Any]) -> bytes:
        op = target.rpartition(".")[2]
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise LookupError(op)
        result = handler(body)
        return result if isinstance(result, bytes) else orjson.dumps(result)

    # -- DynamoDB ---------------------------------------------------------------------------------

    def op_DescribeTable(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "Table": {
                "TableName": body["TableName"],
                "TableStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
                "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
            }
        }

    def op_DescribeTimeToLive(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": "_bridge_expires"}}

    def _key(self, table: str, key: dict[str, Any]) -> tuple[str, bytes]:
        return table, orjson.dumps(key[KEY])

    def op_Stats(self, body: dict[str, Any]) -> dict[str, Any]:
        """Not a DynamoDB call: ``{"count", "first", "last"}`` of the PutItems into ``TableName``."""
        with self.lock:
            count, first, last = self.puts.get(body["TableName"], [0, 0.0, 0.0])
        return {"count": int(count), "first": first, "last": last}

    def op_PutItem(self, body: dict[str, Any]) -> dict[str, Any]:
        item = body["Item"]
        now = time.monotonic()
        with self.lock:
            seen = self.puts.setdefault(body["TableName"], [0, now, now])
            seen[0] += 1
            seen[2] = now
            old = self.items.get(self._key(body["TableName"], item))
            self.items[self._key(body["TableName"], item)] = item
        return {"Attributes": old} if old is not None and body.get("ReturnValues") == "ALL_OLD" else {}

    def op_GetItem(self, body: dict[str, Any]) -> dict[str, Any]:
        item = self.items.get(self._key(body["TableName"], body["Key"]))
        return {"Item": item} if item is not None else {}

    def op_BatchGetItem(self, body: dict[str, Any]) -> dict[str, Any]:
        responses = {}
        for table, request in body["RequestItems"].items():
            found = (self.items.get(self._key(table, key)) for key in request["Keys"])
            responses[table] = [item for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def op_UpdateItem(self, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def op_DeleteItem(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.items.pop(self._key(body["TableName"], body["Key"]), None)
        return {}

    # -- DynamoDB Streams -------------------------------------------------------------------------

    def op_DescribeStream(self, body: dict[str, Any]) -> dict[str, Any]:
        shard = {
            "ShardId": SHARD_ID,
            "SequenceNumberRange": {
                "StartingSequenceNumber": str(FIRST_SEQ),
                "EndingSequenceNumber": str(FIRST_SEQ + self.records - 1),
            },
        }
        return {
            "StreamDescription": {
                "StreamArn": body["StreamArn"],
                "StreamLabel": "2024-05-20T08:00:00.000",
                "StreamStatus": "ENABLED",
                "StreamViewType": "NEW_AND_OLD_IMAGES",
                "TableName": "profiles",
                "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
                "Shards": [shard],
            }
        }

    def op_GetShardIterator(self, body: dict[str, Any]) -> dict[str, Any]:
        kind, seq = body["ShardIteratorType"], body.get("SequenceNumber")
        position = 0
        if kind == "AFTER_SEQUENCE_NUMBER" and seq is not None:
            position = int(seq) - FIRST_SEQ + 1
        elif kind == "AT_SEQUENCE_NUMBER" and seq is not None:
            position = int(seq) - FIRST_SEQ
        elif kind == "LATEST":
            position = self.records
        return {"ShardIterator": str(position)}

    def op_GetRecords(self, body: dict[str, Any]) -> bytes:
        start, limit = int(body["ShardIterator"]), min(int(body.get("Limit") or 1000), 1000)
        page = self.pages.get((start, limit))
        if page is None:
            end = min(self.records, start + limit)
            records = [wire_record(self.workload.record(p, self.workload.op(p))) for p in range(start, end)]
            answer: dict[str, Any] = {"Records": records}
            if end < self.records:
                answer["NextShardIterator"] = str(end)
            page = self.pages[(start, limit)] = orjson.dumps(answer)
        return page


def wire_record(record: dict[str, Any]) -> dict[str, Any]:
    """A boto3-form workload record as GetRecords sends it: the time in epoch seconds (the workload
    has no binary values, so the attribute values are already in wire form)."""
    ddb = dict(record["dynamodb"])
    ddb["ApproximateCreationDateTime"] = ddb["ApproximateCreationDateTime"].timestamp()
    return {**record, "dynamodb": ddb}


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its connections
        disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = self.headers.get("X-Amz-Target", "")
            try:
                status, payload = 200, stub.answer(target, orjson.loads(body or b"{}"))
            except LookupError as exc:
                status = 400
                payload = orjson.dumps({"__type": "UnknownOperationException", "message": f"stub: no {exc}"})
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", "stub")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def stub_stats(endpoint: str, table: str) -> dict[str, Any]:
    """The stub's count of PutItems into ``table``, and the monotonic times of the first and last."""
    request = urllib.request.Request(
        endpoint, data=orjson.dumps({"TableName": table}), headers={"X-Amz-Target": "Stub.Stats"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = orjson.loads(response.read())
    return answer


@contextmanager
def stub_server(records: int, seed: int) -> Iterator[str]:
    """Start the stub in its own process; yields its endpoint URL, stops it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.bench.stub", "--records", str(records), "--seed", str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the stub endpoint did not start")
        yield f"http://127.0.0.1:{orjson.loads(line)['port']}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@click.command()
@click.option("--records", type=int, default=0, help="records in the stream's one closed shard")
@click.option("--seed", type=int, default=17)
def main(records: int, seed: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Stub(records, seed)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write(orjson.dumps({"port": server.server_address[1]}).decode() + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the bench closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
