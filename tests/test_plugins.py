"""The plugin manager: entry points, disabling, broken plugins, unknown schemes."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest

from bridge import hookspecs
from bridge.errors import UnknownTransportError
from bridge.plugins import build_plugin_set
from bridge.transport import TransportURL

ROOT = Path(__file__).resolve().parent.parent


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
