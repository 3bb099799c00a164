"""The one place that builds the plugin manager and finds a transport for a URL.

Every transport, built-in or not, is a plugin under the ``bridge.transports``
entry-point group. A plugin that fails to import is recorded by name and the others
still load; ``BRIDGE_DISABLE_PLUGINS=name,...`` blocks named plugins.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from bridge.errors import PluginError, UnknownTransportError
from bridge.plugin import spec as hookspecs
from bridge.transport import Transport, TransportURL

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "bridge.transports"
DISABLE_ENV = "BRIDGE_DISABLE_PLUGINS"


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    schemes: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False


@dataclass
class PluginSet:
    manager: pluggy.PluginManager
    infos: list[PluginInfo]
    transports: dict[str, type[Transport]]

    def transport_class(self, url: TransportURL) -> type[Transport]:
        try:
            return self.transports[url.scheme]
        except KeyError:
            known = sorted(self.transports)
            hint = difflib.get_close_matches(url.scheme, known, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise UnknownTransportError(
                f"no transport for scheme {url.scheme!r} in {url.redacted()!r};"
                f" installed: {', '.join(known) or 'none'}.{did_you_mean}"
            ) from None

    def sibling(self, url: str | TransportURL, suffix: str) -> TransportURL:
        """The destination beside ``url``, named by its own transport: ``users.dlq`` -> ``users.dlq.parked``."""
        parsed = url if isinstance(url, TransportURL) else TransportURL.parse(url)
        return self.transport_class(parsed)(parsed).sibling(suffix)

    def open(self, url: str | TransportURL, role: str) -> Transport:
        parsed = url if isinstance(url, TransportURL) else TransportURL.parse(url)
        transport = self.transport_class(parsed)(parsed)
        self.manager.hook.bridge_transport_opened(transport=transport, role=role)
        return transport


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> str | None:
    """What is wrong with the plugin's hook implementations (none, or ones no hookspec has)."""
    known = sorted(name for name in dir(hookspecs) if name.startswith("bridge_"))
    callers = manager.get_hookcallers(plugin) or []
    if not callers:
        return f"implements no hook: decorate its {' / '.join(known)} with @bridge.hookimpl"
    names = sorted(caller.name for caller in callers if not caller.has_spec())
    if not names:
        return None
    hints = [
        f"{n!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(n, known, n=1)) else repr(n) for n in names
    ]
    return f"implements unknown hook {', '.join(hints)}; the hooks are {', '.join(known)}"


def build_plugin_set() -> PluginSet:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    disabled = _disabled_names()
    infos: list[PluginInfo] = []
    transports: dict[str, type[Transport]] = {}
    by_name: dict[str, PluginInfo] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in by_name:
            continue  # the same distribution seen twice on sys.path
        dist = ep.dist
        info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "?")
        by_name[ep.name] = info
        infos.append(info)
        if ep.name in disabled:
            manager.set_blocked(ep.name)
            info.disabled = True
            continue
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            info.error = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %s failed to load: %s", ep.name, info.error)
            continue
        unknown = _unknown_hooks(manager, plugin)
        if unknown:
            # A misspelt hook (bridge_transport) would otherwise fail check_pending() for
            # every plugin: report it on this one and leave it out.
            manager.unregister(plugin)
            info.error = unknown
            log.warning("plugin %s left out: %s", ep.name, unknown)
    for impl in manager.hook.bridge_transports.get_hookimpls():
        info = by_name.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?"))
        try:
            offered: list[Any] = list(impl.function() or [])  # type: ignore[call-overload]
        except Exception as exc:
            info.error = f"bridge_transports() raised {type(exc).__name__}: {exc}"
            continue
        for cls in offered:
            if not (isinstance(cls, type) and issubclass(cls, Transport)):
                info.error = f"bridge_transports returned {cls!r}, not a Transport subclass"
                continue
            for scheme in cls.schemes:
                if scheme in transports:
                    info.error = f"scheme {scheme!r} already provided by {transports[scheme].__module__}"
                    continue
                transports[scheme] = cls
                info.schemes.append(scheme)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc
    return PluginSet(manager, infos, transports)


@lru_cache(maxsize=1)
def plugin_set() -> PluginSet:
    """The process-wide plugin set (built once)."""
    return build_plugin_set()


def open_transport(url: str | TransportURL, role: str) -> Transport:
    return plugin_set().open(url, role)
