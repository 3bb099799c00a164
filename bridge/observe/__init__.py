"""What an operator sees of a running line: health, readiness, metrics and their exporters.

:class:`~bridge.observe.health.Health` is the one object each loop reports to (it turned, it paused
and why, a link went down) and that ``/healthz``, ``/readyz`` and ``bridge status`` read.
:mod:`bridge.observe.metrics` holds every metric (one Prometheus registry) and the one-line calls
the loops make; :mod:`~bridge.observe.server` serves them over HTTP, :mod:`~bridge.observe.emf`
writes them as CloudWatch EMF lines, :mod:`~bridge.observe.report` logs a line a minute.

May import: ``bridge.errors`` only, so every package of the data path may report here.
"""

from bridge.observe import metrics
from bridge.observe.health import Health

__all__ = ["Health", "metrics"]
