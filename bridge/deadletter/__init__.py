"""Dead letters: failure records, parking them on the dead-letter transport or a local directory.

Holds the failure record format (:mod:`~bridge.deadletter.records`) and the :class:`Parker`. Both
sides park what they cannot deliver or apply, so this package sits below both.

May import: ``bridge.change``, ``bridge.errors``, ``bridge.envelope``, ``bridge.transport``,
``bridge.plugin``. Never publish, apply, cli, demo or bench.
"""

from bridge.deadletter.records import (
    FORMAT,
    TERMINAL,
    FailureRecord,
    Kind,
    Parker,
    State,
    wrap_foreign,
)

__all__ = ["FORMAT", "TERMINAL", "FailureRecord", "Kind", "Parker", "State", "wrap_foreign"]
