"""Measure the serverless handlers: cold start (import, init) and CPU time per change.

Run: ``python -m tests.integration.serverless.measure [--changes 1000]`` (needs moto[server]). Prints one
JSON object; docs/serverless.md quotes its figures. What is measured, and how:

* ``import_ms``: ``import bridge.serverless`` in a fresh interpreter (median of 5), what every cold
  start pays before the first event;
* ``publish_init_ms`` / ``apply_init_ms``: the first invocation's build of the function (settings, SSM
  keys, DescribeTable, transports, plugin discovery), against the moto server on loopback;
* ``publish_cpu_ms_per_change`` / ``apply_cpu_ms_per_change``: process CPU time inside the handlers
  (``time.process_time``: this process only, not the moto server) divided by the changes they carried,
  over batches as the emulated mappings deliver them. Lambda bills wall time; on AWS the handlers
  mostly wait on DynamoDB and the transport, so the wall figures (``*_wall_ms_per_change``, on
  loopback moto) are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from bridge.demo.emulator import moto_server
from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import Signer
from bridge.serverless import apply_handler, publish_handler
from tests.integration.serverless.conftest import Side, client
from tests.integration.serverless.emulator import Function, StreamMapping

IMPORT_PROBE = "import time; t = time.perf_counter(); import bridge.serverless; print(time.perf_counter() - t)"


class Timed:
    """Wraps a handler: CPU and wall time spent inside it."""

    def __init__(self, handler: Any) -> None:
        self.handler, self.cpu, self.wall, self.first_ms = handler, 0.0, 0.0, None

    def __call__(self, event: Any, context: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return self.handler(event, context)
        finally:
            spent = time.perf_counter() - wall
            if self.first_ms is None:
                self.first_ms = spent * 1000
            else:
                self.cpu += time.process_time() - cpu
                self.wall += spent


def import_ms() -> float:
    runs = [
        float(subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True).stdout)
        for _ in range(5)
    ]
    return statistics.median(runs) * 1000


def side(endpoint: str, region: str, prefix: str) -> Side:
    table = f"{prefix}-{region}"
    create_table(client("dynamodb", endpoint, region), table)
    signer = Signer.from_seed(region.encode().ljust(32, b"k")[:32])
    result = Side(endpoint, region, table, f"{prefix}/{region}", signer)
    result.client("ssm").put_parameter(
        Name=f"/{result.prefix}/signing-key", Value=signer._private_pem().decode(), Type="SecureString"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the emulator's, never real ones
        os.environ.setdefault(name, "testing")
    out: dict[str, Any] = {"import_ms": round(import_ms(), 1)}
    prefix = f"m{uuid.uuid4().hex[:8]}"
    with moto_server() as endpoint:
        source, target = side(endpoint, "us-east-1", prefix), side(endpoint, "eu-west-1", prefix)
        target.trust("source", source.signer)
        staging, arn = target.kinesis(f"{prefix}-staging")
        pub, app = Timed(publish_handler), Timed(apply_handler)
        publish = Function(pub, source.publisher(staging, batch_max_changes="500").env)
        apply = Function(app, target.applier(staging, target.dead_letter(prefix), accept_tables=source.table).env)
        publish({"Records": []})
        apply({"Records": []})
        for op in Workload(seed=3, keys=args.changes).ops(args.changes):
            run_op(source.client("dynamodb"), source.table, op)
        streams = source.client("dynamodbstreams")
        StreamMapping(streams, "dynamodb", source.stream_arn, publish, region="us-east-1", batch_size=500).drain(600)
        StreamMapping(target.client("kinesis"), "kinesis", arn, apply, region="eu-west-1", batch_size=100).drain(600)
    n = args.changes
    out |= {
        "publish_init_ms": round(pub.first_ms or 0, 1),
        "apply_init_ms": round(app.first_ms or 0, 1),
        "changes": n,
        "publish_cpu_ms_per_change": round(pub.cpu * 1000 / n, 3),
        "apply_cpu_ms_per_change": round(app.cpu * 1000 / n, 3),
        "publish_wall_ms_per_change": round(pub.wall * 1000 / n, 3),
        "apply_wall_ms_per_change": round(app.wall * 1000 / n, 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
