"""Copying and comparing whole tables: bootstrap (resumable parallel scan), verify and repair.

Holds the scan machinery (:mod:`~bridge.copy.scan`), the bootstrap copy that ships scanned items
through the publish side's sender (:mod:`~bridge.copy.bootstrap`), and the digest comparison behind
``bridge verify`` (:mod:`~bridge.copy.verify`, :mod:`~bridge.copy.compare`). Scan progress is kept by
:mod:`bridge.state`.

May import: ``bridge.change``, ``bridge.errors``, ``bridge.source``, ``bridge.state``, ``bridge.publish``,
``bridge.deadletter``, ``bridge.envelope``, ``bridge.transport``, ``bridge.aws``. Never ``bridge.apply``,
cli, demo or bench.
"""
