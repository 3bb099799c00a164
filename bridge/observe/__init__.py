"""What an operator sees of a running line: health and readiness now; metrics and their exporters.

:class:`~bridge.observe.health.Health` is the one object each loop reports to (it turned, it paused
and why, a link went down) and that ``/healthz``, ``/readyz`` and ``bridge status`` read.

May import: ``bridge.errors`` only, so every package of the data path may report here.
"""

from bridge.observe.health import Health

__all__ = ["Health"]
