"""The serverless form: ``publish_handler`` and ``apply_handler`` for AWS Lambda event source mappings.

``bridge.serverless.publish_handler`` takes a DynamoDB Streams event and ships it through the configured
transport; ``bridge.serverless.apply_handler`` takes a Kinesis or SQS event of envelopes and applies them.
Both run the daemons' cores (:class:`~bridge.publish.Publisher`, :class:`~bridge.apply.loop.Applier`,
:class:`~bridge.deadletter.records.Parker`) built by :mod:`bridge.wiring`, once per container, from the
``BRIDGE_*`` environment; keys come from SSM Parameter Store or Secrets Manager (:mod:`.secrets`).
docs/serverless.md describes deploying and operating them.

May import any product package and ``bridge.wiring`` (as the daemons' assembly does); never cli, demo or
bench, which would cost every cold start their imports (a test holds it).
"""

from bridge.serverless.handlers import apply_handler, publish_handler

__all__ = ["apply_handler", "publish_handler"]
