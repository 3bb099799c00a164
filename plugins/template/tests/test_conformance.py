"""The ddb-bridge transport conformance kit against a real myq broker."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from bridge.testing import TransportContract

BROKER = ("127.0.0.1", 7000)  # TODO: where your local test broker listens


@pytest.fixture(scope="module")
def broker() -> tuple[str, int]:
    # TODO: connect with your client library instead, and keep the connection for cleanup.
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no myq broker on {BROKER}: {exc}")
    return BROKER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestMyQTransport(TransportContract):
    # TODO (docs: "Run the conformance kit"): the upper bound for a crashed consumer's
    # deliveries to come back, as your transport_url configures it.
    redelivery_timeout = 30.0
    # TODO: a case your broker cannot be put through here, with the reason (else write its fixture).
    untestable = {"wrong_credentials": "TODO: the test broker has no authentication"}

    @pytest.fixture
    def transport_url(self, broker: tuple[str, int], unique_destination: str) -> Iterator[str]:
        host, port = broker
        yield f"myq://{host}:{port}/{unique_destination}"
        # TODO: delete the destination and its siblings (unique_destination + ".dlq", ".dlq.parked").

    @pytest.fixture
    def unreachable_transport_url(self, unique_destination: str) -> str:
        return f"myq://127.0.0.1:{free_port()}/{unique_destination}"  # nothing listens there

    @pytest.fixture
    def delete_destination(self) -> Callable[[str], None]:
        def delete(url: str) -> None:
            raise NotImplementedError("TODO: delete the destination of `url` with your client library")

        return delete
