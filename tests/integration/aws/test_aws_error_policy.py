"""The one AWS error policy, on real boto3 clients against moto's server (issue 10).

moto never refuses a permission and implements every operation the bridge calls, so refusals are
answered by a ``before-call`` hook with the error body AWS sends; botocore raises it as it raises
the real one. The proxy failure is real: a client whose proxy is a closed local port.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse

from bridge.apply.loop import ApplyStats, ChangeApplier
from bridge.apply.retry import RetryPolicy, failure_records
from bridge.apply.target import TargetTable
from bridge.aws.errors import ErrorClass, classify
from bridge.change import Change, Operation, Version
from bridge.deadletter.records import State
from bridge.demo.workload import create_table
from bridge.envelope import Batch
from bridge.errors import SystemicError, TransientApplyError

KEY = {"tenant": {"S": "a"}, "user_id": {"N": "1"}}


def put(name: str = "x") -> Change:
    return Change(KEY, Operation.PUT, Version(10, "r1", 1), {**KEY, "name": {"S": name}})


def refuse(client: Any, operation: str, code: str, status: int = 400) -> None:
    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": code, "Message": f"injected {code} for {operation}"}
        return AWSResponse(params.get("url", ""), status, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    client.meta.events.register(f"before-call.dynamodb.{operation}", answer)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.aws
def test_a_proxy_that_refuses_the_connection_is_transient_never_parked(moto_endpoint: str, unique: str) -> None:
    direct = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(direct, unique, stream=False)
    target = TargetTable.open(direct, unique)
    proxied = boto3.client(
        "dynamodb",
        endpoint_url=moto_endpoint,
        region_name="us-west-2",
        config=botocore.config.Config(
            proxies={"http": f"http://127.0.0.1:{closed_port()}"}, retries={"total_max_attempts": 1}
        ),
    )
    stats = ApplyStats()
    applier = ChangeApplier(dataclasses.replace(target, client=proxied), stats, transient_retries=1)
    try:
        (failed,) = applier.apply([(put(), 0)])
    finally:
        applier.shutdown()
    assert isinstance(failed.error, TransientApplyError) and "ProxyConnectionError" in str(failed.error)
    assert stats.retries == 1  # retried in place, as any network failure
    batch = Batch("e", "r1", unique, 0, (put(),))
    (record,) = failure_records(b"signed", batch, [(0, failed.error)], RetryPolicy())
    assert record.state is State.RETRYING  # to the retry queue, not the parked one


@pytest.mark.aws
@pytest.mark.parametrize(
    "code,status", [("AccessDeniedException", 400), ("UnknownOperationException", 400), ("NotImplemented", 501)]
)
def test_ttl_refused_warns_with_the_action_on_every_start(
    moto_endpoint: str, unique: str, code: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url=moto_endpoint,
        region_name="us-west-2",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    create_table(client, unique, stream=False)
    refuse(client, "UpdateTimeToLive", code, status)
    lines = []
    for _ in range(2):  # first start creates the tombstone table; the second finds it
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bridge.apply.target"):
            target = TargetTable.open(client, unique)
        lines.append([r.getMessage() for r in caplog.records])
    for start in lines:
        (line,) = start  # one line, no traceback
        assert "dynamodb:UpdateTimeToLive" in line and code in line and "will not expire" in line
    ttl = client.describe_time_to_live(TableName=target.tombstone_table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"


@pytest.mark.aws
def test_ttl_is_enabled_on_a_later_start_once_allowed(moto_endpoint: str, unique: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    refusing = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    refuse(refusing, "UpdateTimeToLive", "AccessDeniedException")
    TargetTable.open(refusing, unique)
    target = TargetTable.open(client, unique)  # the permission was granted meanwhile
    ttl = client.describe_time_to_live(TableName=target.tombstone_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "_bridge_expires")


@pytest.mark.aws
@pytest.mark.parametrize("code", ["AccessDeniedException", "ExpiredTokenException", "UnrecognizedClientException"])
def test_refusals_that_concern_every_change_are_systemic_not_dead_letters(
    moto_endpoint: str, unique: str, code: str
) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    target = TargetTable.open(client, unique)
    refuse(client, "PutItem", code)
    applier = ChangeApplier(target, ApplyStats(), transient_retries=3)
    try:
        with pytest.raises(SystemicError, match=code):
            applier.apply([(put(), 0)])
    finally:
        applier.shutdown()
    assert applier.stats.retries == 0  # no retry of something that concerns every change


@pytest.mark.aws
def test_a_deleted_table_is_systemic_and_the_probe_sees_it_come_back(moto_endpoint: str, unique: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(client, unique, stream=False)
    target = TargetTable.open(client, unique)
    client.delete_table(TableName=unique)
    client.get_waiter("table_not_exists").wait(TableName=unique)
    with pytest.raises(SystemicError, match="ResourceNotFoundException"):
        target.apply(put())
    with pytest.raises(SystemicError, match="ResourceNotFoundException"):
        target.check()
    create_table(client, unique, stream=False)
    target.check()
    target.apply(put())


def test_classification_of_botocore_errors() -> None:
    def client_error(code: str, status: int = 400, message: str = "") -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
        )

    assert classify(client_error("ProvisionedThroughputExceededException")) is ErrorClass.THROTTLED
    assert classify(client_error("InternalServerError", 500)) is ErrorClass.TRANSIENT
    assert classify(client_error("SomethingNew", 503)) is ErrorClass.TRANSIENT
    assert classify(client_error("ValidationException", message="Item size has exceeded")) is ErrorClass.PERMANENT
    key = "The provided key element does not match the schema"
    assert classify(client_error("ValidationException", message=key)) is ErrorClass.SYSTEMIC
    assert classify(client_error("ResourceNotFoundException")) is ErrorClass.SYSTEMIC
    assert classify(client_error("NotImplemented", 501)) is ErrorClass.SYSTEMIC
    proxy = botocore.exceptions.ProxyConnectionError(proxy_url="http://p:3128", error="refused")
    assert classify(proxy) is ErrorClass.TRANSIENT
    assert classify(botocore.exceptions.NoCredentialsError()) is ErrorClass.SYSTEMIC
    assert classify(botocore.exceptions.ParamValidationError(report="bad")) is ErrorClass.PERMANENT
    assert classify(ValueError("not botocore")) is ErrorClass.PERMANENT
