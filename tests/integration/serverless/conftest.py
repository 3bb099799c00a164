"""One emulated deployment per test: tables, Kinesis stream, queues and keys on the moto server.

A :class:`Side` is one region's half of a deployment (docs/serverless.md): the source table with its
stream, the publish function, and (for the other direction) the staging stream or queue, the apply
function and its target table. Keys live in SSM SecureString parameters, as the templates put them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from bridge.demo.workload import create_table
from bridge.envelope import Signer
from bridge.serverless import apply_handler, publish_handler
from tests.integration.serverless.emulator import Function

KEYS = ("tenant", "user_id")


def client(service: str, endpoint: str, region: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=region)


@dataclass
class Side:
    """One region: its table and the functions deployed there."""

    endpoint: str
    region: str
    table: str
    prefix: str  # SSM path and resource prefix of this region's deployment
    signer: Signer
    env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return client(service, self.endpoint, self.region)

    @property
    def stream_arn(self) -> str:
        return str(self.client("dynamodb").describe_table(TableName=self.table)["Table"]["LatestStreamArn"])

    def aws_env(self) -> dict[str, str]:
        # The function's own region and the emulator's endpoints for what it reads itself (SSM).
        return {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_SSM": self.endpoint,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.endpoint,
        }

    def publisher(self, transport: str, **settings: str) -> Function:
        env = {
            **self.aws_env(),
            "BRIDGE_TRANSPORT": transport,
            "BRIDGE_SOURCE_TABLE": self.table,
            "BRIDGE_SOURCE_REGION": self.region,
            "BRIDGE_SOURCE_ENDPOINT": self.endpoint,
            "BRIDGE_SIGNING_KEY": f"ssm:/{self.prefix}/signing-key",
            "BRIDGE_BATCH_MAX_CHANGES": "10",
            "BRIDGE_AWS_MAX_ATTEMPTS": "2",
            **{f"BRIDGE_{k.upper()}": v for k, v in settings.items()},
        }
        return Function(publish_handler, env)

    def applier(self, transport: str, dead_letter: str, **settings: str) -> Function:
        env = {
            **self.aws_env(),
            "BRIDGE_TRANSPORT": transport,
            "BRIDGE_DEAD_LETTER": dead_letter,
            "BRIDGE_TARGET_TABLE": self.table,
            "BRIDGE_TARGET_REGION": self.region,
            "BRIDGE_TARGET_ENDPOINT": self.endpoint,
            "BRIDGE_TRUSTED_KEYS": f"ssm-path:/{self.prefix}/trusted",
            "BRIDGE_WORKERS": "4",
            "BRIDGE_TRANSIENT_RETRIES": "0",
            "BRIDGE_AWS_MAX_ATTEMPTS": "1",
            **{f"BRIDGE_{k.upper()}": v for k, v in settings.items()},
        }
        return Function(apply_handler, env)

    def trust(self, name: str, signer: Signer) -> None:
        """Put ``signer``'s public key among this region's trusted keys."""
        self.client("ssm").put_parameter(
            Name=f"/{self.prefix}/trusted/{name}", Value=signer.public_pem().decode(), Type="SecureString"
        )

    def kinesis(self, name: str) -> tuple[str, str]:
        """A staging Kinesis stream in this region: (transport URL, stream ARN)."""
        kinesis = self.client("kinesis")
        kinesis.create_stream(StreamName=name, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=name)
        arn = kinesis.describe_stream(StreamName=name)["StreamDescription"]["StreamARN"]
        return f"kinesis://{name}?region={self.region}&endpoint_url={self.endpoint}&create=false", str(arn)

    def sqs(self, name: str, max_message_bytes: int = 1024 * 1024) -> tuple[str, str]:
        """A staging SQS queue in this region: (transport URL, queue URL)."""
        attributes = {"MaximumMessageSize": str(max_message_bytes)}
        url = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        limit = f"&max_message_bytes={max_message_bytes}"
        return f"sqs://{name}?region={self.region}&endpoint_url={self.endpoint}{limit}", str(url)

    def dead_letter(self, name: str) -> str:
        return f"sqs://{name}-dlq?region={self.region}&endpoint_url={self.endpoint}"


@pytest.fixture
def make_side(moto_endpoint: str, unique: str) -> Callable[..., Side]:
    def make(region: str, *, stream: bool = True, key: str | None = None) -> Side:
        """``key``: a table keyed by one number attribute of that name, else the workload's schema."""
        table = f"{unique}-{region}"
        schema: dict[str, Any] = {}
        if key is not None:
            schema = {
                "key_schema": [{"AttributeName": key, "KeyType": "HASH"}],
                "attributes": [{"AttributeName": key, "AttributeType": "N"}],
            }
        create_table(client("dynamodb", moto_endpoint, region), table, stream=stream, **schema)
        signer = Signer.from_seed(region.encode().ljust(32, b"k")[:32])
        side = Side(moto_endpoint, region, table, f"{unique}/{region}", signer)
        side.client("ssm").put_parameter(
            Name=f"/{side.prefix}/signing-key", Value=signer._private_pem().decode(), Type="SecureString"
        )
        return side

    return make
