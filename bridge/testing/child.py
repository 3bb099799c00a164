"""The second process of the kit's crash tests: ``python -m bridge.testing.child MODE URL ...``.

``consume URL COUNT TIMEOUT``: receive COUNT deliveries without acking them, print their
body digests as one JSON line, then hold them until killed.

``publish URL TAG COUNT``: publish COUNT messages, print their body digests once
``publish()`` returned (the broker confirmed them), then wait to be killed without
closing the transport.
"""

from __future__ import annotations

import json
import sys
import time

from bridge.plugin.manager import open_transport
from bridge.testing.support import digest, make_messages
from bridge.transport import Delivery


def main(argv: list[str]) -> int:
    mode, url, *rest = argv
    if mode == "consume":
        count, timeout = int(rest[0]), float(rest[1])
        transport = open_transport(url, "consume")
        held: list[Delivery] = []
        deadline = time.monotonic() + timeout
        while len(held) < count and time.monotonic() < deadline:
            held += transport.receive(count - len(held), timeout=1.0)
        report = {"held": [digest(d.body) for d in held]}
    elif mode == "publish":
        tag, count = rest[0], int(rest[1])
        transport = open_transport(url, "publish")
        sent = make_messages(tag, count)
        transport.publish(sent)
        report = {"confirmed": [digest(m.body) for m in sent]}
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # hold everything, unacked and unclosed, until SIGKILL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
