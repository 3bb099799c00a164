"""AWS at the boundary: one way to build clients per side, and one policy for AWS errors.

:mod:`~bridge.aws.session` builds boto3 clients for a side (credentials, role, SSM-held keys, proxy,
timeouts, retry mode). :mod:`~bridge.aws.errors` classifies every botocore failure (throttled,
transient, permanent for this change, systemic); every module that calls AWS asks it.

May import: ``bridge.errors``, ``bridge.transport`` (URL parsing for the AWS transports, and the one
:class:`~bridge.transport.backoff.Backoff`, re-exported here for callers that reach AWS only).
"""

from bridge.aws.errors import ErrorClass, classify, describe
from bridge.aws.session import (
    AWS_PARAMS,
    CONNECTION_ERRORS,
    RETRYABLE_CODES,
    AwsSide,
    AwsTransportURL,
    aws_boundary,
    error_code,
    is_throttling,
    map_client_error,
    param_flag,
    param_number,
)
from bridge.transport.backoff import Backoff

__all__ = [
    "AWS_PARAMS",
    "CONNECTION_ERRORS",
    "RETRYABLE_CODES",
    "AwsSide",
    "AwsTransportURL",
    "Backoff",
    "ErrorClass",
    "aws_boundary",
    "classify",
    "describe",
    "error_code",
    "is_throttling",
    "map_client_error",
    "param_flag",
    "param_number",
]
