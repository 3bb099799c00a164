"""``sqs://``: the built-in Amazon SQS transport (boto3), standard and FIFO queues.

URL::

    sqs://QUEUE[.fifo]?region=REGION[&endpoint_url=URL][&account=OWNER_ACCOUNT_ID]
        [&profile=P | &ssm_access_key_param=NAME&ssm_secret_key_param=NAME[&ssm_region=R]
         | &access_key_env=VAR&secret_key_env=VAR[&session_token_env=VAR]]
        [&role_arn=ARN[&external_id=X][&role_session_name=N]][&proxy=http://HOST:PORT][&ca_bundle=FILE]
        [&connect_timeout=5][&read_timeout=30][&max_attempts=10]
        [&create=true][&visibility_timeout=30][&wait_time=20][&max_message_bytes=1048576]
        [&retention_seconds=1209600][&redrive_queue=NAME&max_receive_count=10]

A name ending in ``.fifo`` is a FIFO queue: per-partition-key order (MessageGroupId) and SQS-side
deduplication of re-sent envelopes (MessageDeduplicationId = the envelope id). Held deliveries are
kept invisible by a background thread until acked (deleted) or released; ``close()`` makes the
unacked ones visible again. ``create=true`` (the default) creates a missing queue on first use. The
dead-letter queue is ``QUEUE-dlq`` (``NAME-dlq.fifo``). Full reference: docs/transports.md.
"""

from __future__ import annotations

from bridge import hookimpl
from bridge.transport import Transport
from bridge_sqs.transport import SqsTransport

__all__ = ["SqsTransport", "bridge_transports"]


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [SqsTransport]
