"""The conformance kit (bridge.testing) against every transport, each on its real broker.

Transports whose plugin is not installed (kinesis, sqs on a bare checkout) are reported as
skipped with the reason, or fail under CI=true like a missing service. The redis and nats
plugins run the kit in their own tests/ directories, which are in this suite's testpaths.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pytest

from bridge.testing import TransportContract
from tests import services

REGION = "us-west-2"


def needs_plugin(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        services.missing(f"transport plugin {module} is not installed")


class TestMemoryTransport(TransportContract):
    # memory:// queues are module globals of one process: the cross-process cases
    # (consumer killed, publisher killed) cannot apply and are skipped with that reason.
    in_process_only = True
    quiet_period = 0.5
    untestable = {
        "unreachable": "in-process: there is no broker to be unreachable",
        "wrong_credentials": "in-process: no credentials",
        "deleted_destination": "in-process: nothing outside this object can delete a queue",
    }

    @pytest.fixture
    def transport_url(self, unique_destination: str) -> str:
        return f"memory://{unique_destination}"


@pytest.mark.rabbitmq
class TestAmqpTransport(TransportContract):
    # RabbitMQ requeues a dead consumer's deliveries as soon as its connection drops.
    redelivery_timeout = 10.0
    quiet_period = 1.0

    @pytest.fixture
    def transport_url(self, amqp_url: str, unique_destination: str) -> Iterator[str]:
        from kombu.connection import Connection

        yield f"{amqp_url}?queue={unique_destination}"
        with Connection(amqp_url, transport="pyamqp") as conn:  # type: ignore[no-untyped-call]
            channel = conn.channel()
            for name in (unique_destination, f"{unique_destination}.dlq"):
                channel.queue_delete(name)

    @pytest.fixture
    def unreachable_transport_url(self, unique_destination: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{services.free_port()}//?queue={unique_destination}"

    @pytest.fixture
    def wrong_credentials_url(self, amqp_url: str, unique_destination: str) -> str:
        parts = urlsplit(amqp_url)
        netloc = f"{parts.username}:wrong-{parts.password}@{parts.hostname}:{parts.port or 5672}"
        return urlunsplit(parts._replace(netloc=netloc, query=f"queue={unique_destination}"))

    @pytest.fixture
    def delete_destination(self, amqp_url: str) -> Callable[[str], None]:
        from kombu.connection import Connection

        def delete(url: str) -> None:
            with Connection(amqp_url, transport="pyamqp") as conn:  # type: ignore[no-untyped-call]
                conn.channel().queue_delete(dict(parse_qsl(urlsplit(url).query))["queue"])

        return delete


def delete_aws(kind: str, endpoint: str, *names: str) -> None:
    import boto3

    client = boto3.client(kind, endpoint_url=endpoint, region_name=REGION)
    for name in names:
        with contextlib.suppress(client.exceptions.ClientError):
            if kind == "kinesis":
                client.delete_stream(StreamName=name)
            else:
                client.delete_queue(QueueUrl=client.get_queue_url(QueueName=name)["QueueUrl"])


AWS_UNTESTABLE = {"wrong_credentials": "moto's server accepts any credentials; real AWS is not reachable here"}


def unreachable_aws(scheme: str, name: str) -> str:
    # Nothing listens on the port; few, short attempts: this is about the error type.
    endpoint = f"http://127.0.0.1:{services.free_port()}"
    return f"{scheme}://{name}?region={REGION}&endpoint_url={endpoint}&max_attempts=2&connect_timeout=1"


@pytest.mark.aws
class TestKinesisTransport(TransportContract):
    # The consumer resumes from its last checkpoint: a killed consumer's records are read again.
    redelivery_timeout = 10.0
    quiet_period = 1.0
    untestable = AWS_UNTESTABLE

    @pytest.fixture
    def transport_url(self, moto_endpoint: str, unique_destination: str, tmp_path: Path) -> Iterator[str]:
        needs_plugin("bridge_kinesis")
        yield (
            f"kinesis://{unique_destination}?region={REGION}&endpoint_url={moto_endpoint}"
            f"&checkpoint={tmp_path / 'checkpoints.sqlite'}"
        )
        delete_aws("kinesis", moto_endpoint, unique_destination, f"{unique_destination}.dlq")

    @pytest.fixture
    def unreachable_transport_url(self, unique_destination: str) -> str:
        return unreachable_aws("kinesis", unique_destination)

    @pytest.fixture
    def delete_destination(self, moto_endpoint: str) -> Callable[[str], None]:
        return lambda url: delete_aws("kinesis", moto_endpoint, urlsplit(url).netloc)


@pytest.mark.aws
class TestSqsTransport(TransportContract):
    """A standard queue: no order promised (the applier does not need it: last writer wins)."""

    ordered = False
    redelivery_timeout = 10.0  # visibility_timeout=3 below
    quiet_period = 1.0
    suffix = ""
    untestable = AWS_UNTESTABLE

    @pytest.fixture
    def transport_url(self, moto_endpoint: str, unique_destination: str) -> Iterator[str]:
        needs_plugin("bridge_sqs")
        queue = f"{unique_destination}{self.suffix}"
        yield f"sqs://{queue}?region={REGION}&endpoint_url={moto_endpoint}&visibility_timeout=3"
        delete_aws("sqs", moto_endpoint, queue, f"{unique_destination}-dlq{self.suffix}")

    @pytest.fixture
    def unreachable_transport_url(self, unique_destination: str) -> str:
        return unreachable_aws("sqs", unique_destination)

    @pytest.fixture
    def delete_destination(self, moto_endpoint: str) -> Callable[[str], None]:
        return lambda url: delete_aws("sqs", moto_endpoint, urlsplit(url).netloc)


class TestSqsFifoTransport(TestSqsTransport):
    """A FIFO queue: order per partition key (MessageGroupId)."""

    ordered = True
    suffix = ".fifo"


COVERED: dict[str, type[TransportContract] | str] = {
    "bridge_memory": TestMemoryTransport,
    "bridge_amqp": TestAmqpTransport,
    # Third-party-style plugins run the kit in their own tests/ (in this suite's testpaths).
    "bridge_redis": "plugins/ddb-bridge-redis/tests/test_redis_kit.py",
    "bridge_nats": "plugins/ddb-bridge-nats/tests/test_nats_kit.py",
    "bridge_kinesis": TestKinesisTransport,
    "bridge_sqs": TestSqsTransport,
}


def test_every_transport_in_this_repository_is_covered() -> None:
    """A transport added under plugins/ later must get its class here."""
    from bridge.plugin.manager import plugin_set

    root = Path(__file__).resolve().parents[3] / "plugins"
    ours = {
        cls.__module__.split(".")[0]
        for cls in plugin_set().transports.values()
        if root in Path(sys.modules[cls.__module__].__file__ or "").resolve().parents
    }
    assert ours - set(COVERED) == set(), "transports without a conformance class here"
