"""Per-side AWS settings (bridge.aws.session): credentials, roles, SSM keys, proxies, retries, timeouts.

Against moto's server: STS AssumeRole issues credentials that moto then maps to the role's account
(so a stream created through a role in account 111111111111 is invisible to the default account),
IAM access keys are recognised by GetCallerIdentity, SSM holds SecureString parameters. The proxy
is a real forwarding HTTP proxy on 127.0.0.1 that counts what passes through it.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from bridge.aws import AwsSide, AwsTransportURL
from bridge.config import PublishConfig
from bridge.errors import ConfigError
from bridge.plugin.manager import open_transport
from bridge.transport import OutgoingMessage, TransportURL
from bridge.wiring import aws_side

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::111111111111:role/bridge-transport"


# -- a forwarding proxy ----------------------------------------------------------------------


class CountingProxy:
    """A plain-HTTP forward proxy (absolute-form requests), recording each request's target."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                target = urlsplit(self.path)
                seen.append(f"{self.command} {target.netloc} {self.headers.get('X-Amz-Target', '')}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                conn.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[CountingProxy]:
    with CountingProxy() as p:
        yield p


@pytest.fixture
def moto_sts_ssm(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point STS and SSM at moto the standard botocore way (service-specific endpoint variables)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_endpoint)
    return moto_endpoint


@pytest.fixture
def iam_keys(moto_endpoint: str) -> tuple[str, str, str]:
    """A moto IAM user's access key: (user ARN, access key id, secret)."""
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"bridge-{uuid.uuid4().hex[:8]}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return arn, key["AccessKeyId"], key["SecretAccessKey"]


def caller(side: AwsSide) -> str:
    return str(side.client("sts").get_caller_identity()["Arn"])


# -- parsing and validation ------------------------------------------------------------------


def test_from_params_reads_every_setting() -> None:
    side = AwsSide.from_params(
        {
            "region": "cn-north-1",
            "endpoint_url": "https://kinesis.cn-north-1.amazonaws.com.cn",
            "role_arn": "arn:aws-cn:iam::123456789012:role/r",
            "external_id": "ext-1",
            "proxy": "http://u:p@proxy:3128",
            "connect_timeout": "2.5",
            "read_timeout": "9",
            "max_attempts": "4",
            "queue": "ignored",
        },
        what="test",
    )
    assert (side.region, side.role_arn, side.external_id) == (
        "cn-north-1",
        "arn:aws-cn:iam::123456789012:role/r",
        "ext-1",
    )
    assert (side.connect_timeout, side.read_timeout, side.max_attempts) == (2.5, 9.0, 4)
    assert "u:p" not in repr(side) and "ext-1" not in repr(side)


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({}, "region is required"),
        ({"region": "us-west-2", "max_attempts": "many"}, "max_attempts must be a number"),
        ({"region": "us-west-2", "max_attempts": "0"}, "max_attempts must be at least 1"),
        ({"region": "us-west-2", "role_arn": "bridge-role"}, "not a role ARN"),
        ({"region": "us-west-2", "external_id": "xyz"}, "only used with role_arn"),
        ({"region": "us-west-2", "proxy": "proxy:3128"}, "proxy must be an http:// or https:// URL"),
        ({"region": "us-west-2", "ssm_access_key_param": "/k"}, "go together"),
        (
            {"region": "us-west-2", "profile": "p", "access_key_env": "A", "secret_key_env": "B"},
            "choose one credential source",
        ),
        ({"region": "us-west-2", "access_key_env": "1A", "secret_key_env": "B"}, "must name an environment variable"),
        ({"region": "US West"}, "is not a region name"),
    ],
)
def test_bad_settings_are_named(params: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        AwsSide.from_params(params, what="kinesis://s")
    assert str(info.value).startswith("kinesis://s: ")


def test_clients_use_adaptive_retries_timeouts_and_the_proxy_for_both_schemes() -> None:
    side = AwsSide("us-west-2", proxy="http://127.0.0.1:3128", connect_timeout=2, read_timeout=7, max_attempts=3)
    config = side.client("kinesis").meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (2, 7)
    assert config.proxies == {"http": "http://127.0.0.1:3128", "https": "http://127.0.0.1:3128"}
    assert side.config(local=True).proxies is None


def test_a_proxy_password_never_reaches_a_log_line() -> None:
    url = AwsTransportURL.wrap(
        TransportURL.parse("kinesis://s?region=us-west-2&proxy=http%3A%2F%2Fbridge%3As3cret%40proxy%3A3128")
    )
    assert "s3cret" not in url.redacted()
    assert "bridge:***@proxy:3128" in url.redacted()


def test_config_settings_reach_the_side(tmp_path: Path) -> None:
    cfg = PublishConfig(
        source_table="users",
        source_region="cn-north-1",
        source_endpoint="http://127.0.0.1:1",
        transport="memory://q",
        signing_key=tmp_path / "k",
        source_role_arn="arn:aws-cn:iam::123456789012:role/reader",
        source_external_id="ext-id",
        source_proxy="http://proxy:3128",
        aws_connect_timeout=1.5,
        aws_max_attempts=3,
    )
    side = aws_side(cfg, "source")
    assert (side.region, side.endpoint_url, side.role_arn, side.external_id, side.proxy) == (
        "cn-north-1",
        "http://127.0.0.1:1",
        "arn:aws-cn:iam::123456789012:role/reader",
        "ext-id",
        "http://proxy:3128",
    )
    assert (side.connect_timeout, side.read_timeout, side.max_attempts) == (1.5, 30.0, 3)


def test_config_refuses_a_malformed_role_arn(tmp_path: Path) -> None:
    from bridge.config import load

    with pytest.raises(ConfigError, match="source_role_arn"):
        load(
            PublishConfig,
            None,
            {
                "source_table": "users",
                "source_region": "us-west-2",
                "transport": "memory://q",
                "signing_key": str(tmp_path / "k"),
                "source_role_arn": "reader",
            },
            environ={},
        )


# -- credentials against moto ----------------------------------------------------------------


def test_role_is_assumed_with_external_id_and_lands_in_the_roles_account(moto_sts_ssm: str) -> None:
    side = AwsSide("us-west-2", moto_sts_ssm, role_arn=ROLE, external_id="bridge-ext", role_session_name="replica-7")
    assert caller(side) == "arn:aws:sts::111111111111:assumed-role/bridge-transport/replica-7"
    assert side.session().get_credentials().method == "assume-role"
    # A stream created through the role lives in the role's account, not the caller's.
    name = f"cross-{uuid.uuid4().hex[:8]}"
    side.client("kinesis").create_stream(StreamName=name, ShardCount=1)
    own = boto3.client("kinesis", endpoint_url=moto_sts_ssm, region_name="us-west-2")
    assert name in side.client("kinesis").list_streams()["StreamNames"]
    assert name not in own.list_streams()["StreamNames"]


def test_keys_are_read_from_ssm_in_the_local_region(moto_sts_ssm: str, iam_keys: tuple[str, str, str]) -> None:
    user_arn, access_key, secret_key = iam_keys
    ssm = boto3.client("ssm", endpoint_url=moto_sts_ssm, region_name="eu-west-1")  # the local region
    prefix = f"/bridge/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=f"{prefix}/ak", Value=access_key, Type="SecureString")
    ssm.put_parameter(Name=f"{prefix}/sk", Value=secret_key, Type="SecureString")

    side = AwsSide(
        "us-west-2",
        moto_sts_ssm,
        ssm_access_key_param=f"{prefix}/ak",
        ssm_secret_key_param=f"{prefix}/sk",
        ssm_region="eu-west-1",
    )
    assert caller(side) == user_arn

    elsewhere = AwsSide(
        "us-west-2",
        moto_sts_ssm,
        ssm_access_key_param=f"{prefix}/ak",
        ssm_secret_key_param=f"{prefix}/sk",
        ssm_region="ap-east-1",
    )
    with pytest.raises(ConfigError, match=f"{prefix}/ak"):
        caller(elsewhere)


def test_ssm_keys_then_a_role(moto_sts_ssm: str, iam_keys: tuple[str, str, str]) -> None:
    _, access_key, secret_key = iam_keys
    ssm = boto3.client("ssm", endpoint_url=moto_sts_ssm, region_name="eu-west-1")
    prefix = f"/bridge/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=f"{prefix}/ak", Value=access_key, Type="SecureString")
    ssm.put_parameter(Name=f"{prefix}/sk", Value=secret_key, Type="SecureString")
    side = AwsSide(
        "us-west-2",
        moto_sts_ssm,
        ssm_access_key_param=f"{prefix}/ak",
        ssm_secret_key_param=f"{prefix}/sk",
        ssm_region="eu-west-1",
        role_arn=ROLE,
    )
    assert caller(side).startswith("arn:aws:sts::111111111111:assumed-role/bridge-transport/")


def test_keys_from_named_environment_variables(
    moto_endpoint: str, iam_keys: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user_arn, access_key, secret_key = iam_keys
    monkeypatch.setenv("FAR_SIDE_AK", access_key)
    monkeypatch.setenv("FAR_SIDE_SK", secret_key)
    side = AwsSide("us-west-2", moto_endpoint, access_key_env="FAR_SIDE_AK", secret_key_env="FAR_SIDE_SK")
    assert caller(side) == user_arn
    monkeypatch.delenv("FAR_SIDE_SK")
    with pytest.raises(ConfigError, match="FAR_SIDE_SK"):
        AwsSide("us-west-2", moto_endpoint, access_key_env="FAR_SIDE_AK", secret_key_env="FAR_SIDE_SK").session()


def test_transport_credentials_come_from_its_url_not_the_process_defaults(
    moto_sts_ssm: str, unique: str, tmp_path: Path
) -> None:
    url = (
        f"kinesis://{unique}?region=us-west-2&endpoint_url={moto_sts_ssm}&role_arn={ROLE}"
        f"&checkpoint={tmp_path / 'cp.sqlite'}"
    )
    transport = open_transport(url, "publish")
    try:
        transport.publish([OutgoingMessage(b"across accounts", "m1", "pk")])
        assert transport.receive(1, timeout=5)[0].body == b"across accounts"
    finally:
        transport.close()
    own = boto3.client("kinesis", endpoint_url=moto_sts_ssm, region_name="us-west-2")
    assert unique not in own.list_streams()["StreamNames"]  # created in account 111111111111


# -- the proxy, for real ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["kinesis", "sqs"])
def test_transport_traffic_goes_through_the_proxy(
    moto_endpoint: str, proxy: CountingProxy, unique: str, scheme: str, tmp_path: Path
) -> None:
    url = (
        f"{scheme}://{unique}?region=us-west-2&endpoint_url={moto_endpoint}&proxy={proxy.url}"
        f"&checkpoint={tmp_path / 'cp.sqlite'}"
    )
    transport = open_transport(url, "consume")
    try:
        transport.publish([OutgoingMessage(b"via proxy", "m1", "pk")])
        [delivery] = transport.receive(1, timeout=5)
        transport.ack(delivery)
    finally:
        transport.close()
    assert delivery.body == b"via proxy"
    moto = urlsplit(moto_endpoint).netloc
    assert all(f" {moto} " in line for line in proxy.seen)
    targets = " ".join(proxy.seen)
    expected = ["PutRecords", "GetRecords"] if scheme == "kinesis" else ["SendMessageBatch", "ReceiveMessage"]
    assert all(op in targets for op in expected), proxy.seen


def test_ssm_key_reads_do_not_use_the_far_sides_proxy(
    moto_sts_ssm: str, proxy: CountingProxy, iam_keys: tuple[str, str, str]
) -> None:
    user_arn, access_key, secret_key = iam_keys
    ssm = boto3.client("ssm", endpoint_url=moto_sts_ssm, region_name="eu-west-1")
    prefix = f"/bridge/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=f"{prefix}/ak", Value=access_key, Type="SecureString")
    ssm.put_parameter(Name=f"{prefix}/sk", Value=secret_key, Type="SecureString")
    side = AwsSide(
        "us-west-2",
        moto_sts_ssm,
        proxy=proxy.url,
        ssm_access_key_param=f"{prefix}/ak",
        ssm_secret_key_param=f"{prefix}/sk",
        ssm_region="eu-west-1",
    )
    assert caller(side) == user_arn
    assert len(proxy.seen) == 1, proxy.seen  # GetCallerIdentity only: the SSM reads went direct
    assert not any("AmazonSSM" in line for line in proxy.seen)
