"""One policy for AWS errors: what a botocore/boto3 failure means for the change that met it.

Every caller (source, apply, copy, the kinesis and sqs transports, the CLIs) asks :func:`classify`
instead of keeping its own list of codes. The classes, and what the bridge does with each:

* ``THROTTLED``: slow down and try the same call again (botocore's adaptive mode has done so
  already; a caller's one loop of its own may go on).
* ``TRANSIENT``: the network, a proxy, a timeout or a 5xx: the same call may work soon.
* ``PERMANENT``: this request will never work (validation, item too large): park this change only.
* ``SYSTEMIC``: the same failure will meet every change (table or stream missing, access denied,
  wrong key schema, unknown operation, expired or missing credentials): stop the line, never park
  or drain; wait until the cause is gone.

Why a 4xx code we do not know is ``PERMANENT`` and not ``SYSTEMIC``: it concerns the request it came
with; a systemic one we missed still reaches the operator through the parked queue and the exit code
of ``--until-idle``, while pausing on a per-item error would stop replication for one bad item.
"""

from __future__ import annotations

import enum

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
)

from bridge.errors import BridgeError, SystemicError

__all__ = [
    "CONNECTION_ERRORS",
    "SYSTEMIC_CODES",
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "ErrorClass",
    "classify",
    "describe",
    "error_code",
    "failure",
]


class ErrorClass(enum.Enum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    SYSTEMIC = "systemic"


#: Network-level failures: reconnecting and trying again may succeed. A proxy that refuses or drops
#: the connection is one of them (it is the network between us and AWS, not the request).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ProxyConnectionError,
    HTTPClientError,
)

#: "Slow down" across DynamoDB, Streams, Kinesis, SQS, STS and KMS.
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "KMSThrottlingException",
        "KmsThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "OverLimit",
    }
)

#: The service failed, not the request: try again.
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "AWS.SimpleQueueService.ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

#: The same answer will come for every change: missing resources, permissions, credentials, operations.
SYSTEMIC_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "TableNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "UnknownOperationException",
        "InvalidAction",
        "NotImplemented",
        "UnsupportedOperation",
        "UnsupportedOperationException",
    }
)

# DynamoDB answers a key of the wrong name or type with a plain ValidationException; only its text
# tells it from a bad item, and it concerns every change sent to that table.
_KEY_SCHEMA_MESSAGES = (
    "key element does not match the schema",
    "missing the key",
    "one or more parameter values were invalid: type mismatch for key",
    "the number of conditions on the keys is invalid",
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "") or "")


def classify(exc: BaseException) -> ErrorClass:
    """The class of a botocore/boto3 failure (anything else: ``PERMANENT``, this change's problem)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in THROTTLING_CODES:
            return ErrorClass.THROTTLED
        if code in SYSTEMIC_CODES:
            return ErrorClass.SYSTEMIC
        if code == "ValidationException" and any(m in _message(exc).lower() for m in _KEY_SCHEMA_MESSAGES):
            return ErrorClass.SYSTEMIC
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in TRANSIENT_CODES or status >= 500:
            return ErrorClass.TRANSIENT
        return ErrorClass.PERMANENT
    if isinstance(exc, CONNECTION_ERRORS):
        return ErrorClass.TRANSIENT
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError | NoRegionError):
        return ErrorClass.SYSTEMIC
    if isinstance(exc, ParamValidationError):
        return ErrorClass.PERMANENT  # botocore refused this request's values before sending it
    if isinstance(exc, BotoCoreError):
        return ErrorClass.TRANSIENT  # the remaining botocore errors are about the exchange, not the request
    return ErrorClass.PERMANENT


def describe(exc: BaseException) -> str:
    """One line for logs and failure records: ``Code: message`` or ``ExceptionType: text``."""
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {_message(exc) or exc}"
    return f"{type(exc).__name__}: {exc}"


def failure(exc: BaseException, text: str, other: type[BridgeError]) -> BridgeError:
    """The bridge error for an AWS failure at a boundary: SystemicError if it concerns every call
    (the caller pauses or exits 9), else ``other`` (e.g. SourceError). ``text`` says what failed."""
    kind = SystemicError if classify(exc) is ErrorClass.SYSTEMIC else other
    return kind(f"{text}: {describe(exc)}")
