"""``kinesis://``: the built-in Amazon Kinesis Data Streams transport (boto3).

URL::

    kinesis://STREAM?region=REGION[&endpoint_url=URL]
        [&profile=P | &ssm_access_key_param=NAME&ssm_secret_key_param=NAME[&ssm_region=R]
         | &access_key_env=VAR&secret_key_env=VAR[&session_token_env=VAR]]
        [&role_arn=ARN[&external_id=X][&role_session_name=N]][&proxy=http://HOST:PORT][&ca_bundle=FILE]
        [&connect_timeout=5][&read_timeout=30][&max_attempts=10]
        [&create=true][&shards=1|on-demand][&retention_hours=24]
        [&checkpoint=PATH|dynamodb://TABLE][&consumer=NAME][&poll_interval=0.5][&read_ahead=100]
        [&put_attempts=10]

The stream's credentials come from its own parameters, never from the source or target side
(see :mod:`bridge.aws.session`). ``create=true`` (the default) creates a missing stream on first use, like
the applier's companion tables; ``create=false`` fails with a configuration error instead. The
consumer's checkpoints live in ``checkpoint`` (default ``bridge-kinesis-STREAM.sqlite`` in the
working directory), keyed by the stream ARN and ``consumer``. The dead-letter stream is
``STREAM.dlq`` with the same parameters. Full reference: docs/transports.md.
"""

from __future__ import annotations

from bridge import hookimpl
from bridge.transport import Transport
from bridge_kinesis.transport import KinesisTransport

__all__ = ["KinesisTransport", "bridge_transports"]


@hookimpl
def bridge_transports() -> list[type[Transport]]:
    return [KinesisTransport]
