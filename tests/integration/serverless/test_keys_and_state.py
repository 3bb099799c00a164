"""Keys from Secrets Manager and rotated trust under an SSM path; the loop guard's memory in DynamoDB;
the handler's own deadline. Real parts: the moto server's SSM, Secrets Manager, DynamoDB, SQS."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bridge.change import Change, Operation, Version
from bridge.envelope import Scope, Signer, TrustStore, decode
from bridge.errors import RecoverableTransportError
from bridge.plugin.manager import open_transport
from bridge.serverless.secrets import load_trust
from bridge.state.guard_memory import DynamoDBStore
from tests.integration.serverless.conftest import Side
from tests.integration.serverless.test_handlers import event

pytestmark = pytest.mark.aws


def test_signing_key_from_secrets_manager_and_two_trusted_keys_under_a_path(
    make_side: Callable[..., Side], unique: str
) -> None:
    source = make_side("eu-central-1", key="Id")
    rotated = Signer.from_seed(b"r" * 32)
    source.client("secretsmanager").create_secret(Name=f"{unique}/key", SecretString=rotated._private_pem().decode())
    source.trust("old", source.signer)
    source.trust("new", rotated)
    staging, _ = source.sqs(f"{unique}-staging")
    publish = source.publisher(staging, signing_key=f"secretsmanager:{unique}/key")
    assert publish(event("dynamodb-stream-event.json")) == {"batchItemFailures": []}

    with pytest.MonkeyPatch.context() as env:
        for k, v in source.aws_env().items():
            env.setenv(k, v)
        trust = load_trust(f"ssm-path:/{source.prefix}/trusted", Scope.of(["*"]))
    assert trust.key_ids == {source.signer.key_id, rotated.key_id}
    queue = open_transport(staging, "consume")
    try:
        (delivery,) = queue.receive(10, timeout=2)
    finally:
        queue.close()
    assert decode(delivery.body, TrustStore.of(rotated)).table == source.table  # signed by the secret's key


def change(n: int, ts: int) -> Change:
    return Change({"Id": {"N": str(n)}}, Operation.PUT, Version(ts, "here", 1), new_image={"Id": {"N": str(n)}})


def test_the_loop_guard_memory_is_shared_through_dynamodb(make_side: Callable[..., Side], unique: str) -> None:
    side = make_side("us-east-1", stream=False)
    table = f"{unique}-state"
    side.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "stream_shard", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "stream_shard", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    one, two = (DynamoDBStore(side.client("dynamodb"), table, "here|t", horizon_s=600) for _ in range(2))
    c = change(1, 1_000)
    one.put(c.key_token, (time.time(), c.version, c))
    assert two.get(c.key_token) is None  # not committed: another container cannot see it
    one.commit(older_than=0)
    two.begin()
    seen = two.get(c.key_token)
    assert seen is not None and seen[1] == c.version and seen[2].keys == c.keys
    # Rolled back (a failed batch): the pending entry is gone, the committed one stays.
    newer = change(1, 2_000)
    one.put(newer.key_token, (time.time(), newer.version, newer))
    one.rollback()
    one.begin()
    assert one.get(c.key_token)[1] == c.version  # type: ignore[index]
    # Past the horizon an entry is forgotten.
    old = change(2, 1)
    three = DynamoDBStore(side.client("dynamodb"), table, "here|t", horizon_s=0.5)
    three.put(old.key_token, (time.time() - 10, old.version, old))
    three.commit(older_than=0)
    three.begin()
    assert three.get(old.key_token) is None


def test_the_deadline_returns_a_partial_response_before_lambdas_timeout(
    make_side: Callable[..., Side], unique: str
) -> None:
    source = make_side("eu-central-1", key="Id")
    staging, _ = source.sqs(f"{unique}-staging")
    publish = source.publisher(staging)
    publish({"Records": []})
    transport = publish._built["publish"][0].publisher.sender.transport.transport

    def unreachable(messages: Any) -> None:
        raise RecoverableTransportError("injected: the other partition does not answer")

    transport.publish = unreachable  # retried with backoff until the handler's stop event is set
    publish.timeout_s = 2.0  # the deadline: 2 s - min(10 s, 2/5 s)
    started = time.monotonic()
    result = publish(event("dynamodb-stream-event.json"))
    assert result == {"batchItemFailures": [{"itemIdentifier": "4421584500000000017450439091"}]}
    assert 1.0 < time.monotonic() - started < 2.0
