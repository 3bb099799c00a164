"""Transport plugins: the typed hook specifications and the one place that builds the plugin manager.

Like tox's ``plugin/{spec,manager}.py``: :mod:`~bridge.plugin.spec` declares every hook with a docstring,
:mod:`~bridge.plugin.manager` builds the pluggy manager from the ``bridge.transports`` entry points
(built-ins are registered exactly like third-party plugins). Callers receive the :class:`PluginSet` and
pass it down; nothing fetches it from a global.

May import: ``bridge.errors``, ``bridge.transport``.
"""
