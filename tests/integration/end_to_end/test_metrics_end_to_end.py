"""Scraping /metrics with a real HTTP client while both daemons replicate over RabbitMQ and moto."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.demo.workload import Workload, create_table, run_op
from bridge.envelope import keygen
from tests.helpers import start, wait_identical, wait_until
from tests.services import free_port
from tests.unit.test_emf import check_line

KEYS = ("tenant", "user_id")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
    )


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening yet


@pytest.mark.rabbitmq
@pytest.mark.aws
def test_metrics_count_what_was_replicated(moto_endpoint: str, amqp_url: str, unique: str, tmp_path: Path) -> None:
    src = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="cn-north-1")
    dst = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-west-2")
    create_table(src, unique)
    create_table(dst, unique, stream=False)
    private, public = keygen(tmp_path / "keys")
    url = f"{amqp_url}?queue={unique}"
    pub_port, app_port = free_port(), free_port()
    common = ["--transport", url, "--quarantine-dir", str(tmp_path / "q")]
    publish_args = [
        *("--source-table", unique, "--source-region", "cn-north-1", "--source-endpoint", moto_endpoint),
        *("--signing-key", str(private), "--checkpoint", str(tmp_path / "cp.sqlite")),
        *("--timestamp-attribute", "updated_at", "--metrics-port", str(pub_port), *common),
    ]
    apply_args = [
        *("--target-table", unique, "--target-region", "us-west-2", "--target-endpoint", moto_endpoint),
        *("--trusted-keys", str(public), "--metrics-port", str(app_port)),
        *("--metrics", "emf", "--metrics-interval", "1", *common),
    ]
    log = tmp_path / "bridge.log"
    pub = start("bridge.cli.publish", publish_args, log)
    app = start("bridge.cli.apply", apply_args, log)
    try:
        wait_until("readiness", lambda: probe(pub_port, "/readyz") == 200 and probe(app_port, "/readyz") == 200, 60)
        assert probe(pub_port, "/healthz") == probe(app_port, "/healthz") == 200
        for op in Workload(seed=5, keys=60).ops(200):
            run_op(src, unique, op)
        diff = wait_identical(src, dst, unique, KEYS, timeout=180)
        assert diff.identical, log.read_text()[-3000:]

        def settled() -> bool:
            published = total(scrape(pub_port), "bridge_changes_published_total", table=unique)
            judged = total(scrape(app_port), "bridge_changes_applied_total", table=unique)
            return published > 0 and judged == published

        wait_until("the applier to count every published change", settled, 60)
        p, a = scrape(pub_port), scrape(app_port)
        stream_records = total(p, "bridge_stream_records_read_total", table=unique)
        published = total(p, "bridge_changes_published_total", table=unique)
        applied = total(a, "bridge_changes_applied_total", table=unique, outcome="applied")
        assert stream_records == published >= 200  # every write made a record, every record a change
        assert 0 < applied <= published
        # one lag observation per applied change, and lags are those of a line that keeps up
        assert total(a, "bridge_replication_lag_seconds_count", table=unique, origin="cn-north-1") == applied
        lag_sum = total(a, "bridge_replication_lag_seconds_sum", table=unique)
        assert 0 < lag_sum / applied < 60
        assert total(a, "bridge_envelopes_received_total", table=unique) == total(
            p, "bridge_envelopes_published_total", table=unique
        )
        assert total(p, "bridge_published_bytes_total", table=unique) == total(a, "bridge_received_bytes_total")
        assert total(p, "bridge_broker_confirms_total", transport="amqp") >= total(
            p, "bridge_envelopes_published_total"
        )
        assert total(a, "bridge_dead_letters_total") == 0
        ages = [v for (n, ls), v in p.items() if n == "bridge_stream_iterator_age_seconds"]
        assert len(ages) == 1 and 0 <= ages[0] < 60  # moto: one shard
        assert total(p, "bridge_checkpoint_age_seconds", table=unique) < 120
        assert total(a, "bridge_ready") == total(p, "bridge_ready") == 1
    finally:
        for proc in (pub, app):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (pub, app)]
    output = log.read_text()
    assert codes == [0, 0], output[-3000:]
    emf = [check_line(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    assert sum(doc.get("ChangesApplied", 0) for doc in emf) == applied
    assert f"apply {unique}, total" in output and f"publish {unique}, total" in output  # the line at the end
    assert "guest:guest" not in output
