"""The apply side: verify, decode, dedupe, and apply changes last-writer-wins, with a retry loop.

Holds the consuming loop (:mod:`~bridge.apply.loop`), the target table with its tombstones
(:mod:`~bridge.apply.target`) and the dead-letter retry loop (:mod:`~bridge.apply.retry`).

May import: ``bridge.change``, ``bridge.errors``, ``bridge.envelope``, ``bridge.transport``,
``bridge.deadletter``, ``bridge.aws``, ``bridge.plugin``. Never ``bridge.publish`` or ``bridge.source``,
never cli, demo or bench.
"""
