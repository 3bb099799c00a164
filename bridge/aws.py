"""boto3 clients for one side (source, target, transport), built one way everywhere.

Credentials come from boto3's own chain (env, profile, SSO, instance role); botocore's
adaptive retry mode handles throttling and 5xx; timeouts are explicit because the
internet hop between partitions can hang a socket for minutes otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config


@dataclass(frozen=True)
class AwsSide:
    """How to reach AWS for one side of the bridge."""

    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    max_attempts: int = 10
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_pool_connections: int = 32

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(profile_name=self.profile, region_name=self.region)

    def client(self, service: str) -> Any:
        config = botocore.config.Config(
            retries={"mode": "adaptive", "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
        )
        return self.session().client(service, endpoint_url=self.endpoint_url, config=config)
