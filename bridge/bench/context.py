"""What every figure shares in one run: its size, the emulators, the broker, keys and scratch space."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from bridge.aws import AwsSide
from bridge.demo.emulator import moto_server
from bridge.envelope import Signer, TrustStore, keygen
from bridge.errors import BridgeError

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class Scale:
    """How much each figure measures. ``quick`` proves the bench works (the test suite runs it)."""

    name: str
    wire_changes: int
    codec_changes: int
    codec_repeats: int
    relay_changes: int
    relay_repeats: int
    per_message: int
    source_records: int
    source_repeats: int
    apply_items: int
    lag_seconds: float
    lag_rate: float
    backlog: int
    apply_window_s: float
    apply_workers: int = 8
    cpu_records: int = 20_000  # stream records the publisher CPU figure reads from the stub endpoint
    cpu_items: int = 2_000  # items the applier CPU figure inserts, then updates, on the stub endpoint
    cpu_repeats: int = 5
    scaling_changes: int = 20_000  # changes bridge-apply applies per run of apply_scaling (1 and N processes)
    scaling_repeats: int = 2

    @property
    def quick(self) -> bool:
        return self.name == "quick"


QUICK = Scale(
    "quick",
    wire_changes=5_000,
    codec_changes=5_000,
    codec_repeats=3,
    relay_changes=5_000,
    relay_repeats=1,
    per_message=150,
    source_records=500,
    source_repeats=1,
    apply_items=50,
    lag_seconds=4,
    lag_rate=30,
    backlog=5_000,
    apply_window_s=2,
    cpu_records=2_000,
    cpu_items=200,
    cpu_repeats=1,
    scaling_changes=1_000,
    scaling_repeats=1,
)
FULL = Scale(
    "full",
    wire_changes=20_000,
    codec_changes=10_000,
    codec_repeats=9,
    relay_changes=100_000,
    relay_repeats=2,
    per_message=2_000,
    source_records=2_000,
    source_repeats=2,
    apply_items=500,
    lag_seconds=20,
    lag_rate=40,
    backlog=100_000,
    apply_window_s=20,
)


class Bench:
    """Resources for one run, started on first use and released by :meth:`close`."""

    def __init__(
        self, scale: Scale, workdir: Path, amqp_url: str = DEFAULT_AMQP_URL, console: Console | None = None
    ) -> None:
        self.scale = scale
        self.workdir = workdir
        self.amqp_url = amqp_url
        self.console = console or Console(stderr=True)
        self.run_id = uuid.uuid4().hex[:8]
        self._stack = contextlib.ExitStack()
        self._emulators: dict[str, str] = {}
        self._queues: list[str] = []
        _use_emulator_credentials()

    def close(self) -> None:
        try:
            self._delete_queues()
        finally:
            self._stack.close()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def say(self, message: str) -> None:
        self.console.log(message)

    # -- keys -------------------------------------------------------------------------------------

    @cached_property
    def signer(self) -> Signer:
        return Signer.from_seed(self.signer_seed)

    @cached_property
    def signer_seed(self) -> bytes:
        return os.urandom(32)  # a throwaway key per run; child processes rebuild it from the seed

    @property
    def trust(self) -> TrustStore:
        return TrustStore.of(self.signer)

    @cached_property
    def key_files(self) -> tuple[Path, Path]:
        """``bridge.key`` and ``bridge.pub`` for the figures that start real bridge processes."""
        return keygen(self.workdir / "keys")

    # -- AWS emulator ----------------------------------------------------------------------------

    def emulator(self, side: str) -> str:
        """Endpoint of the moto server for ``side`` ("source" or "target"), one process each."""
        if side not in self._emulators:
            self.say(f"starting the AWS emulator ({side} side)")
            self._emulators[side] = self._stack.enter_context(moto_server())
        return self._emulators[side]

    def aws(self, side: str, region: str, workers: int = 8) -> AwsSide:
        return AwsSide(region, self.emulator(side), max_pool_connections=max(10, workers + 2))

    def table_name(self, purpose: str) -> str:
        return f"bench-{self.run_id}-{purpose}"

    # -- RabbitMQ ---------------------------------------------------------------------------------

    def queue(self, purpose: str) -> str:
        """A queue name for this run, deleted (with its .dlq) when the run ends."""
        name = f"bridge-bench-{self.run_id}-{purpose}"
        self._queues += [name, f"{name}.dlq"]
        return name

    def queue_url(self, queue: str) -> str:
        return f"{self.amqp_url}?queue={queue}"

    def require_amqp(self, figure: str) -> None:
        parts = urlsplit(self.amqp_url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=2):
                return
        except OSError as exc:
            raise BridgeError(
                f"{figure} needs RabbitMQ and none answers at {parts.hostname}:{parts.port or 5672} ({exc});"
                " pass --amqp-url, or leave the figure out with --only"
            ) from exc

    def delete_queue(self, name: str) -> None:
        from kombu.connection import Connection

        conn: Any = Connection(self.amqp_url, connect_timeout=5)  # type: ignore[no-untyped-call]
        try:
            channel = conn.channel()
            channel.queue_delete(name)
        finally:
            conn.release()

    def _delete_queues(self) -> None:
        for name in self._queues:
            with contextlib.suppress(Exception):  # never declared, or the broker went away
                self.delete_queue(name)
        self._queues.clear()


def _use_emulator_credentials() -> None:
    """The emulator accepts any key; never sign its requests with a user's real credentials."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "bench"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "bench"


def discard_memory_queue(url: str) -> None:
    """Empty an in-process (memory://) queue a figure filled, so the run leaves nothing behind."""
    from bridge.plugin.manager import open_transport

    transport = open_transport(url, "consume")
    while batch := transport.receive(1000, 0):
        for delivery in batch:
            transport.ack(delivery)
