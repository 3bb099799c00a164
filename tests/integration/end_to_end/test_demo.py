"""`bridge demo` as a user runs it: a real process, exit 0 and "identical" at the end."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [["--changes", "120", "--rate", "0"], ["--bidirectional", "--changes", "60"]],
    ids=["one-way", "bidirectional"],
)
def test_demo_ends_identical(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "demo", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "identical" in output and "DIFFERENT" not in output


@pytest.mark.rabbitmq
def test_demo_prints_its_metrics_and_deletes_its_queues(amqp_url: str) -> None:
    import os
    import re

    from kombu.connection import Connection

    from tests.services import DEFAULT_AMQP_URL

    if amqp_url != DEFAULT_AMQP_URL:
        pytest.skip("the demo picks RabbitMQ on 127.0.0.1:5672 by itself")
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "demo", "--changes", "40", "--rate", "0"],
        env={**os.environ, "COLUMNS": "200"},  # one line per message, as on a wide terminal
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert re.search(r"metrics while it runs: http://127\.0\.0\.1:\d+/metrics", output), output[-2000:]
    match = re.search(r"\(queue (bridge-demo-[0-9a-f]+), deleted at the end\)", output)
    assert match, output[-2000:]
    conn = Connection(amqp_url, connect_timeout=5)
    try:
        for name in (match.group(1), f"{match.group(1)}.dlq", f"{match.group(1)}.dlq.parked"):
            channel = conn.channel()
            with pytest.raises(Exception, match="NOT_FOUND"):
                channel.queue_declare(name, passive=True)
    finally:
        conn.release()
