"""moto's server on loopback, in a child process: the AWS emulator for the demo and tests.

A child process rather than moto's in-process ThreadedMotoServer: the emulator then has
a core of its own instead of fighting the bridge for the GIL, and concurrent requests
do not race on moto's shared state (seen as "dictionary changed size" 500s in-process).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from bridge.errors import BridgeError


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(start_timeout: float = 30.0) -> Iterator[str]:
    """Yield the endpoint URL of a fresh moto server; stop it on exit."""
    try:
        import moto.server  # noqa: F401 - only to fail early with a clear message
    except ImportError as exc:
        raise BridgeError("the AWS emulator needs moto's server: pip install 'ddb-bridge[demo]'") from exc
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_CALL_RESET_API": "false"},
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BridgeError(f"the moto server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # werkzeug can ignore SIGTERM mid-request
            proc.kill()
            proc.wait(5)
