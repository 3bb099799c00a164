"""Console entry points: ``bridge-publish``, ``bridge-apply`` and the ``bridge`` admin command.

Thin: parse, wire (through :mod:`bridge.wiring`), print. May import anything; nothing imports it.
"""
