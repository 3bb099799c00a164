"""The publish side: stream records -> changes -> batches -> signed envelopes -> transport, then checkpoint.

Holds the publish loop (:mod:`~bridge.publish.loop`), batch sizing shared with the copy path
(:mod:`~bridge.publish.batching`), the sender that turns changes into envelopes that fit the transport
(:mod:`~bridge.publish.sender`) and the active-active loop guard (:mod:`~bridge.publish.loopguard`).

May import: ``bridge.change``, ``bridge.errors``, ``bridge.source``, ``bridge.state``, ``bridge.envelope``,
``bridge.transport``, ``bridge.deadletter``, ``bridge.aws``. Never ``bridge.apply`` (a type both sides need
lives in :mod:`bridge.change`), never cli, demo or bench.
"""

from bridge.publish.batching import BatchLimits
from bridge.publish.loop import Publisher, PublishStats
from bridge.publish.sender import Sender, SendStats, envelope_id_for

__all__ = ["BatchLimits", "PublishStats", "Publisher", "SendStats", "Sender", "envelope_id_for"]
