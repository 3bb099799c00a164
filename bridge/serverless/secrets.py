"""Signing and trusted keys from SSM Parameter Store or Secrets Manager, never from the package.

A key setting (``signing_key``, ``trusted_keys``) names where the PEM text is:

* ``ssm:/NAME``: one SecureString parameter (decrypted with the function's own role);
* ``ssm-path:/PATH`` (trusted keys only): every parameter under the path, one key each, so a
  rotation adds a parameter beside the old one (not a trailing slash: settings are paths, and a
  path loses it);
* ``secretsmanager:NAME``: one secret's ``SecretString``.

The clients use the function's own credentials and region (``AWS_REGION``); endpoint overrides come
from botocore's own ``AWS_ENDPOINT_URL_SSM`` / ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws import ErrorClass, classify, describe
from bridge.envelope import Scope, Signer, TrustStore
from bridge.errors import ConfigError, SystemicError

SCHEMES = ("ssm:", "ssm-path:", "secretsmanager:")


def _where(setting: str, value: Path | str) -> tuple[str, str]:
    text = str(value)
    for scheme in SCHEMES:
        if text.startswith(scheme) and len(text) > len(scheme):
            return scheme[:-1], text[len(scheme) :]
    raise ConfigError(
        f"{setting}: the serverless form reads keys from ssm:/NAME or secretsmanager:NAME, not {text!r}"
        " (a key file in the package would ship the secret with the code)"
    )


def _fail(what: str, exc: Exception) -> Exception:
    # Missing parameter or refused access will not fix itself on a retry: name it and stop.
    if isinstance(exc, ClientError) and classify(exc) is not ErrorClass.SYSTEMIC:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("ParameterNotFound", "ResourceNotFoundException"):
            return ConfigError(f"{what}: not found")
    return SystemicError(f"cannot read {what}: {describe(exc)}")


def _ssm() -> Any:
    return boto3.client("ssm")


def read_pem(setting: str, value: Path | str) -> list[tuple[str, bytes]]:
    """The PEM texts ``value`` names, each with where it came from."""
    service, name = _where(setting, value)
    try:
        if service == "secretsmanager":
            secret = boto3.client("secretsmanager").get_secret_value(SecretId=name)
            return [(f"secretsmanager:{name}", str(secret["SecretString"]).encode())]
        if service == "ssm":
            param = _ssm().get_parameter(Name=name, WithDecryption=True)["Parameter"]
            return [(f"ssm:{name}", str(param["Value"]).encode())]
        pages = _ssm().get_paginator("get_parameters_by_path").paginate(Path=name, WithDecryption=True)
        found = [(f"ssm:{p['Name']}", str(p["Value"]).encode()) for page in pages for p in page["Parameters"]]
    except (BotoCoreError, ClientError) as exc:
        raise _fail(f"{setting} {service}:{name}", exc) from exc
    if not found:
        raise ConfigError(f"{setting}: no parameters under ssm:{name}")
    return found


def load_signer(value: Path | str) -> Signer:
    ((where, pem),) = read_pem("signing_key", value)
    return Signer.from_pem(pem, where)


def load_trust(value: Path | str, accept: Scope) -> TrustStore:
    trust = TrustStore(accept=accept)
    for where, pem in read_pem("trusted_keys", value):
        trust.add_pem(pem, where)
    return trust
