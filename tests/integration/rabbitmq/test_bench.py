"""``bridge bench --quick`` runs every figure for real and writes the JSON the issue specifies.

Only the shape is checked: a benchmark's numbers on a shared 2-core machine are noise to a test
(no timing assertions). The figures themselves use the real RabbitMQ and moto's server.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.bench.figures import KEYS

ISSUE_KEYS = {
    "wire_bytes_ratio",
    "encode_changes_per_s",
    "decode_changes_per_s",
    "relay_vs_raw_ratio",
    "relay_vs_per_message_ratio",
    "source_vs_raw_ratio",
    "apply_vs_raw_ratio",
    "writes_per_change",
    "apply_calls_per_change",
    "publish_cpu_ratio",
    "apply_cpu_ratio",
    "apply_scaling",
    "lag_p99_s",
    "peak_rss_mb",
}


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_quick_bench_writes_every_figure(amqp_url: str, moto_endpoint: str, tmp_path: Path) -> None:
    del moto_endpoint  # the bench starts emulators of its own; the fixture proves moto's server is installed
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "bench", "--quick", "--json", str(out), "--amqp-url", amqp_url],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) >= ISSUE_KEYS
    assert set(figures) == set(KEYS)
    for key, figure in figures.items():
        assert isinstance(figure["value"], (int, float)) and math.isfinite(figure["value"]), key
        assert isinstance(figure["unit"], str) and figure["unit"], key
        assert figure["baseline"] is None or isinstance(figure["baseline"], (int, float)), key
        assert isinstance(figure["goal"], str) and figure["goal"], key
    no_baseline = {"writes_per_change", "apply_calls_per_change", "lag_p99_s"}
    for key in ISSUE_KEYS - no_baseline:  # each measured against a raw baseline
        assert figures[key]["baseline"] > 0, key
    assert figures["writes_per_change"]["value"] > 0
    assert "ddb-bridge bench" in done.stdout and "wire_bytes_ratio" in done.stdout


def test_unknown_figure_is_refused_before_anything_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", "bench", "--only", "wire,nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown figure(s) nope" in done.stderr and "wire_bytes_ratio" in done.stderr
