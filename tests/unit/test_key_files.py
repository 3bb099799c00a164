"""Key and trust files are refused like ssh's StrictModes refuses them; real files, real modes and owners.

Ownership cases need root to create a file owned by another user (chown); elsewhere they are skipped
with that reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import PublishConfig, load
from bridge.envelope import Signer, TrustStore, keygen
from bridge.errors import ConfigError, KeyFileError, RouteRefusedError

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes and owners are POSIX")
as_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="chown to another user needs root")
NOBODY = 65534
SIGNER = Signer.from_seed(bytes(range(32)))


def trust_dir(tmp_path: Path, mode: int = 0o755) -> Path:
    d = tmp_path / "trusted"
    d.mkdir()
    (d / "a.pub").write_bytes(SIGNER.public_pem())
    (d / "a.pub").chmod(0o644)
    d.chmod(mode)
    return d


@posix_only
@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_trust_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    d = trust_dir(tmp_path, mode)
    with pytest.raises(KeyFileError, match=f"trust directory {d} has mode {mode:04o}, writable by group or others"):
        TrustStore.load(d)
    d.chmod(0o755)
    assert TrustStore.load(d).key_ids == {SIGNER.key_id}


@posix_only
@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_public_key_file_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    d = trust_dir(tmp_path)
    (d / "a.pub").chmod(mode)
    with pytest.raises(KeyFileError, match=r"trusted key .*a\.pub has mode .* writable by group or others"):
        TrustStore.load(d)
    with pytest.raises(KeyFileError, match="writable by group or others"):
        TrustStore.load(d / "a.pub")


@as_root
def test_private_key_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    key, _ = keygen(tmp_path / "k")
    os.chown(key, NOBODY, NOBODY)
    with pytest.raises(KeyFileError, match=f"private key {key} is owned by uid {NOBODY}, not by this user"):
        Signer.from_file(key)
    os.chown(key, os.geteuid(), os.getegid())
    assert Signer.from_file(key).key_id


@as_root
def test_trust_files_owned_by_another_user_are_refused(tmp_path: Path) -> None:
    d = trust_dir(tmp_path)
    os.chown(d / "a.pub", NOBODY, NOBODY)
    with pytest.raises(KeyFileError, match=f"is owned by uid {NOBODY}, neither this user"):
        TrustStore.load(d)
    os.chown(d / "a.pub", 0, 0)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(KeyFileError, match=f"trust directory {d} is owned by uid {NOBODY}"):
        TrustStore.load(d)


@posix_only
@pytest.mark.parametrize("unreadable", ["directory", "mode 000"])
def test_unreadable_signing_key_exits_with_the_key_file_code(tmp_path: Path, unreadable: str) -> None:
    """Was exit 2 (click's own check of the path, before the key loader saw it); the key file code is 3."""
    if unreadable == "mode 000" and os.geteuid() == 0:
        pytest.skip("root reads a mode 000 file; the directory case covers the same path as root")
    key, _ = keygen(tmp_path / "k")
    key.chmod(0o000)
    bridge_publish = Path(sys.executable).with_name("bridge-publish")
    args = [str(bridge_publish), "--signing-key", str(key.parent if unreadable == "directory" else key)]
    args += ["--source-table", "users", "--source-region", "us-east-1", "--transport", "memory://x"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == KeyFileError.exit_code, result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert ("Is a directory" if unreadable == "directory" else "Permission denied") in line


def test_pub_file_allow_lines_are_parsed_and_misspellings_refused(tmp_path: Path) -> None:
    pub = tmp_path / "a.pub"
    allow = b"# eu publisher\n# allow-tables: users, orders\n# allow-origins: eu-west-1\n"
    pub.write_bytes(allow + SIGNER.public_pem())
    pub.chmod(0o644)
    trust = TrustStore.load(pub)
    trust.authorize(SIGNER.key_id, "orders", "eu-west-1")
    with pytest.raises(RouteRefusedError, match="table 'payments' is not one of orders, users"):
        trust.authorize(SIGNER.key_id, "payments", "eu-west-1")
    with pytest.raises(RouteRefusedError, match="origin 'us-east-1' is not one of eu-west-1"):
        trust.authorize(SIGNER.key_id, "users", "us-east-1")
    with pytest.raises(KeyFileError, match="line 1: unknown directive '# allow-table: users'"):
        pub.write_bytes(b"# allow-table: users\n" + SIGNER.public_pem())
        TrustStore.load(pub)
    with pytest.raises(KeyFileError, match="allow-tables: names nothing"):
        pub.write_bytes(b"# allow-tables:\n" + SIGNER.public_pem())
        TrustStore.load(pub)


@pytest.mark.parametrize(
    "given",
    ["guest:hunter2@rabbit:5672/?queue=users", "amqp:/guest:hunter2@rabbit:5672/?queue=users"],
)
def test_transport_url_without_scheme_is_echoed_without_its_password(given: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(PublishConfig, None, {"transport": given}, environ={})
    message = str(caught.value)
    assert "hunter2" not in message
    assert "guest:***@rabbit:5672" in message and message.startswith("invalid configuration: ")
