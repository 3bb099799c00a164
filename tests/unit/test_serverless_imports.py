"""The Lambda handlers' import path stays small: no cli, demo or bench, nor what only they need.

Every cold start pays for each module imported, so the serverless package must not reach the
command line (click), the progress display (rich), the emulator (moto) or the broker libraries of
transports it was not configured for. Checked in a fresh interpreter, as a cold start is.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, time
started = time.perf_counter()
import bridge.serverless
print(json.dumps({"seconds": time.perf_counter() - started, "modules": sorted(sys.modules)}))
"""

NEVER = ("bridge.cli", "bridge.demo", "bridge.bench", "bridge.testing", "click", "rich", "moto", "kombu", "nats")


def test_the_handlers_import_nothing_of_the_cli_demo_or_bench() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    found = json.loads(out)
    loaded = [m for m in found["modules"] if any(m == n or m.startswith(n + ".") for n in NEVER)]
    assert loaded == [], f"imported on the handlers' path: {loaded}"
    assert "bridge.serverless.handlers" in found["modules"]
