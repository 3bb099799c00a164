"""A stand-in child for bridge.cli.processes.supervise tests: ``python -m tests.processes_child PLAN ...``.

PLAN is one exit code per start of this child index, comma-separated (``1,0``: crash, then finish);
the start count is kept in a file beside PLAN's directory. ``sleep`` waits for SIGTERM, then exits 0.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path


def main() -> None:
    workdir, plan = Path(sys.argv[1]), sys.argv[2].split(",")
    index = sys.argv[sys.argv.index("--child-index") + 1]
    starts = workdir / f"starts-{index}"
    n = len(starts.read_text()) if starts.exists() else 0
    starts.write_text("x" * (n + 1))
    step = plan[min(n, len(plan) - 1)]
    if step == "sleep":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(0.1)
    sys.exit(int(step))


if __name__ == "__main__":
    main()
