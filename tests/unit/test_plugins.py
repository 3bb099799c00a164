"""The plugin manager: entry points, disabling, broken plugins, unknown schemes."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import ConfigError, UnknownTransportError
from bridge.plugin import spec as hookspecs
from bridge.plugin.manager import build_plugin_set
from bridge.transport import OutgoingMessage, Transport, TransportURL

ROOT = Path(__file__).resolve().parents[2]


def test_builtins_load_through_entry_points() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bridge.transports")}
    assert {"amqp", "memory"} <= set(eps)
    ps = build_plugin_set()
    assert ps.transports["memory"].__module__ == eps["memory"]
    assert ps.transports["amqp"].__module__.startswith(eps["amqp"])
    assert ps.transports["amqps"] is ps.transports["amqp"]
    info = {i.name: i for i in ps.infos}
    assert info["amqp"].package == "ddb-bridge" and info["amqp"].error is None


def test_unknown_scheme_names_installed_ones_and_suggests() -> None:
    with pytest.raises(UnknownTransportError) as info:
        build_plugin_set().transport_class(TransportURL.parse("amqpx://u:secret@h//?queue=q"))
    msg = str(info.value)
    assert "installed: " in msg and "memory" in msg and "Did you mean 'amqp'" in msg
    assert "secret" not in msg


def test_disable_env_blocks_named_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_DISABLE_PLUGINS", "memory, other")
    ps = build_plugin_set()
    assert "memory" not in ps.transports
    assert next(i for i in ps.infos if i.name == "memory").disabled


def test_broken_plugin_is_reported_and_others_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.entry_points

    broken = importlib.metadata.EntryPoint("broken", "bridge_no_such_module_xyz", "bridge.transports")

    def fake_entry_points(**kw):  # type: ignore[no-untyped-def]
        found = list(real(**kw))
        return [*found, broken] if kw.get("group") == "bridge.transports" else found

    # Mock: there is no broken distribution installed to load; we add one entry point.
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    ps = build_plugin_set()
    info = {i.name: i for i in ps.infos}
    assert "ModuleNotFoundError" in (info["broken"].error or "")
    assert "memory" in ps.transports


def test_every_hook_is_documented() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("bridge_"):
            continue
        assert fn.__doc__ and fn.__doc__.strip(), f"hookspec {name} has no docstring"
        assert re.search(rf"\b{name}\b", docs), f"hook {name} is not documented in docs/plugins.md"


# -- `bridge plugins`, against real distributions on disk (no mocks) -------------------


def fake_distribution(site: Path, name: str, module: str, code: str) -> None:
    """A minimal installed distribution: importlib.metadata finds it on sys.path."""
    info = site / f"{name.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[bridge.transports]\n{module.removeprefix('bridge_')} = {module}\n")
    (site / f"{module}.py").write_text(code)


def run_bridge(*args: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli.admin", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


def test_bridge_plugins_lists_package_version_and_schemes() -> None:
    done = run_bridge("plugins", "--json")
    assert done.returncode == 0, done.stderr
    listed = {p["name"]: p for p in json.loads(done.stdout)}
    for ep in importlib.metadata.entry_points(group="bridge.transports"):
        name, dist = ep.name, ep.dist
        assert dist is not None
        assert (listed[name]["package"], listed[name]["version"]) == (dist.name, dist.version)
    assert listed["amqp"]["schemes"] == ["amqp", "amqps"]
    table = run_bridge("plugins").stdout
    assert all(name in table for name in listed)


def test_broken_plugins_are_reported_by_name_and_the_others_load(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path,
        "ddb-bridge-broken",
        "bridge_broken",
        "raise ImportError('libbroken.so.1: cannot open shared object file')\n",
    )
    fake_distribution(
        tmp_path,
        "ddb-bridge-typo",
        "bridge_typo",
        "from bridge import hookimpl\n\n@hookimpl\ndef bridge_transport():\n    return []\n",
    )
    fake_distribution(tmp_path, "ddb-bridge-bare", "bridge_bare", "def bridge_transports():\n    return []\n")

    done = run_bridge("plugins", "--json", site=tmp_path)

    assert done.returncode == 4, done.stderr
    assert "3 plugin(s) failed to load: bare, broken, typo" in done.stderr
    listed = {p["name"]: p for p in json.loads(done.stdout)}
    assert listed["broken"]["package"] == "ddb-bridge-broken" and listed["broken"]["version"] == "0.3"
    assert "ImportError: libbroken.so.1" in listed["broken"]["error"]
    assert "'bridge_transport' (did you mean 'bridge_transports'?)" in listed["typo"]["error"]
    assert "@bridge.hookimpl" in listed["bare"]["error"]
    for ok in ("amqp", "memory"):
        assert listed[ok]["error"] is None and listed[ok]["schemes"]
    # ...and a URL served by a plugin that did load still opens, despite the broken ones.
    code = "from bridge.plugin.manager import open_transport; open_transport('memory://x', 'publish').close()"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False, timeout=60).returncode == 0


def test_disabled_plugin_is_listed_as_disabled_and_serves_nothing() -> None:
    done = run_bridge("plugins", "--json", BRIDGE_DISABLE_PLUGINS="memory")
    assert done.returncode == 0, done.stderr
    memory = next(p for p in json.loads(done.stdout) if p["name"] == "memory")
    assert memory["disabled"] is True and memory["schemes"] == []
    table = run_bridge("plugins", BRIDGE_DISABLE_PLUGINS="memory").stdout
    assert "disabled" in table


# -- the template and the docs ----------------------------------------------------------


def test_template_is_never_loaded_but_is_a_working_skeleton(monkeypatch: pytest.MonkeyPatch) -> None:
    template = ROOT / "plugins" / "template"
    installed = {ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group="bridge.transports")}
    assert "bridge_myq" not in installed
    assert "myq" not in build_plugin_set().transports
    pyproject = (template / "pyproject.toml").read_text()  # tomllib is 3.11+; we support 3.10
    assert re.search(r'\[project\.entry-points\."bridge\.transports"\]\s+myq = "bridge_myq"\n', pyproject)

    monkeypatch.syspath_prepend(str(template))
    skeleton = importlib.import_module("bridge_myq")
    [cls] = skeleton.bridge_transports()
    assert issubclass(cls, Transport) and cls.schemes == ("myq",)
    transport = cls(TransportURL.parse("myq://127.0.0.1:7000/orders"))
    # Its URL shape works with core's default naming of dead-letter and parked destinations.
    assert transport.sibling("dlq").raw == "myq://127.0.0.1:7000/orders.dlq"
    with pytest.raises(ConfigError, match="names no destination"):
        cls(TransportURL.parse("myq://127.0.0.1:7000/"))
    with pytest.raises(NotImplementedError):
        transport.publish([OutgoingMessage(b"x", "small", "p")])
    transport.close()
    transport.close()


def test_every_contract_case_and_knob_is_documented() -> None:
    from bridge.testing import TransportContract

    docs = (ROOT / "docs" / "plugins.md").read_text()
    cases = [name for name in dir(TransportContract) if name.startswith("test_")]
    assert len(cases) >= 10
    for name in cases:
        assert f"`{name}" in docs, f"contract case {name} is not listed in docs/plugins.md"
    for knob in (
        "in_process_only",
        "ordered",
        "redelivery_timeout",
        "quiet_period",
        "receive_timeout",
        "transport_url",
        "unreachable_transport_url",
        "make_transport",
        "unique_destination",
    ):
        assert f"`{knob}" in docs, f"{knob} is not documented in docs/plugins.md"


@pytest.mark.parametrize("plugin", ["redis", "nats"])
def test_third_party_plugin_runs_the_kit_from_its_own_directory(plugin: str) -> None:
    """As its author would: `python -m pytest` in the plugin's directory, where no conftest of
    ddb-bridge's helps; the kit arrives through the pytest11 entry point and the import."""
    from tests.redis_server import redis_url

    directory = ROOT / "plugins" / f"ddb-bridge-{plugin}"
    if importlib.util.find_spec(f"bridge_{plugin}") is None:
        pytest.fail(f"bridge_{plugin} is not installed: pip install -e plugins/ddb-bridge-{plugin}")
    with redis_url() as url:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-k", "scheme_is_served or declares or empty_publish or oversize"],
            cwd=directory,
            env={**os.environ, "REDIS_URL": url},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout, done.stdout[-2000:]
