"""The --processes supervisor (bridge/cli/processes.py) with stand-in children: restarts, exit codes, the
group's metrics endpoint. The real applier in a group: tests/integration/end_to_end/test_processes.py."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import processes
from bridge.cli.processes import GroupEndpoint, supervise


@pytest.fixture(autouse=True)
def _fast_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RESTART_FIRST_S", 0.05)


def run(tmp_path: Path, plan: str, n: int = 2, stop_after: float | None = None) -> int:
    stop = threading.Event()
    if stop_after is not None:
        threading.Timer(stop_after, stop.set).start()
    return supervise(n, [str(tmp_path), plan], stop, poll_s=0.05, module="tests.processes_child")


def starts(tmp_path: Path, index: int) -> int:
    return len((tmp_path / f"starts-{index}").read_text())


def test_children_that_finish_end_the_group_with_0(tmp_path: Path) -> None:
    assert run(tmp_path, "0") == 0
    assert starts(tmp_path, 0) == starts(tmp_path, 1) == 1


def test_a_crashed_child_is_started_again(tmp_path: Path) -> None:
    assert run(tmp_path, "1,1,0") == 0
    assert starts(tmp_path, 0) == starts(tmp_path, 1) == 3


def test_a_handled_error_stops_the_group_with_its_code(tmp_path: Path) -> None:
    assert run(tmp_path, "9") == 9


def test_a_crash_loop_stops_the_group_with_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "CRASH_LIMIT", 3)
    monkeypatch.setattr(processes, "RESTART_MAX_S", 0.05)
    assert run(tmp_path, "1", n=1) == 1
    assert starts(tmp_path, 0) == 3


def test_stop_drains_every_child_and_exits_0(tmp_path: Path) -> None:
    assert run(tmp_path, "sleep", stop_after=1.5) == 0
    assert starts(tmp_path, 0) == starts(tmp_path, 1) == 1


class _Child(BaseHTTPRequestHandler):
    ready = 200
    figures = '# TYPE bridge_x_total counter\nbridge_x_total{table="t"} 2.0\n'

    def do_GET(self) -> None:
        status, body = (200, self.figures) if self.path == "/metrics" else (self.ready, "reason\n")
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_group_endpoint_labels_each_childs_figures_and_needs_every_child_ready() -> None:
    group = GroupEndpoint("127.0.0.1", 0, 2)  # port 0: the children's ports are free ones
    servers = []
    try:
        for i, port in enumerate(group.child_ports):
            handler = type("H", (_Child,), {"ready": 200 if i == 0 else 503})
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        status, figures = get(f"{group.url}/metrics")
        assert status == 200
        assert figures.count("# TYPE bridge_x_total counter") == 1
        assert 'bridge_x_total{process="0",table="t"} 2.0' in figures
        assert 'bridge_x_total{process="1",table="t"} 2.0' in figures
        assert get(f"{group.url}/readyz") == (503, "process 1: reason\n")
        gone = servers.pop()  # a child restarting: its port refuses
        gone.shutdown()
        gone.server_close()
        status, reason = get(f"{group.url}/healthz")
        assert status == 503 and "process 1: not answering" in reason
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        group.close()


def test_pipelines_are_refused_with_processes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bridge.cli.apply import main

    cfg = tmp_path / "apply.yaml"
    cfg.write_text(
        "target_region: us-west-2\ntrusted_keys: k.pub\nprocesses: 2\n"
        "pipelines:\n  - {target_table: aaa, transport: 'memory://a'}\n  - {target_table: bbb, transport: 'memory://b'}\n"
    )
    result = CliRunner().invoke(main, ["--config", str(cfg)])
    assert result.exit_code == 2, result.output
    assert "processes > 1 runs one table per process group" in result.output
