from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests import services

# Dummy credentials for moto; never real ones in tests.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a real RabbitMQ (vhost included, no queue)."""
    with services.rabbitmq_url() as url:
        yield url


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto server process (DynamoDB, Streams, Kinesis, SQS)."""
    with services.moto_server() as url:
        yield url


@pytest.fixture
def unique() -> str:
    """A short unique name for queues and tables, so tests never share state."""
    return f"t{uuid.uuid4().hex[:10]}"
