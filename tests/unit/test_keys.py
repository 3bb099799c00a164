from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.envelope import Batch, Signer, TrustStore, decode, encode, key_id_of, keygen
from bridge.errors import KeyFileError, SignatureError

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
BATCH = Batch("env-1", "us-east-1", "orders", 0, ())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_private(path: Path, key: object, file_mode: int = 0o600) -> Path:
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(file_mode)
    return path


# ------------------------------------------------------------------ keygen


@posix_only
def test_keygen_writes_private_key_0600(tmp_path: Path) -> None:
    key_path, pub_path = keygen(tmp_path / "keys")
    assert (key_path.name, pub_path.name) == ("bridge.key", "bridge.pub")
    assert mode(key_path) == 0o600
    assert b"BEGIN PRIVATE KEY" in key_path.read_bytes()
    assert b"BEGIN PUBLIC KEY" in pub_path.read_bytes()
    signer = Signer.from_file(key_path)
    trust = TrustStore.load(pub_path)
    assert trust.key_ids == {signer.key_id}
    assert decode(encode(BATCH, signer), trust) == BATCH


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, _ = keygen(tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        keygen(tmp_path)
    assert key_path.read_bytes() == before


def test_keygen_makes_distinct_keys(tmp_path: Path) -> None:
    a, _ = keygen(tmp_path / "a")
    b, _ = keygen(tmp_path / "b")
    assert Signer.from_file(a).key_id != Signer.from_file(b).key_id


def test_keygen_into_a_file_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(KeyFileError):
        keygen(tmp_path / "f")


# ------------------------------------------------------------------ Signer


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    signer = Signer.from_seed(bytes(32))
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.key_id == hashlib.sha256(raw).hexdigest()[:16] == key_id_of(signer.public_key)
    assert Signer.from_seed(bytes(32)).key_id == signer.key_id
    assert "PRIVATE" not in repr(signer)


def test_from_seed_needs_32_bytes() -> None:
    with pytest.raises(ValueError):
        Signer.from_seed(b"short")


@posix_only
@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o660])
def test_exposed_private_key_is_refused(tmp_path: Path, file_mode: int) -> None:
    path = write_private(tmp_path / "bridge.key", Ed25519PrivateKey.generate(), file_mode)
    with pytest.raises(KeyFileError) as info:
        Signer.from_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{file_mode:04o}" in message
    assert "chmod 600" in message


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        Signer.from_file(tmp_path / "nope.key")
    assert str(tmp_path / "nope.key") in str(info.value)


def test_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        Signer.from_file(tmp_path)


def test_garbage_key_file(tmp_path: Path) -> None:
    path = tmp_path / "bridge.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM PKCS#8 private key"):
        Signer.from_file(path)


def test_rsa_key_is_refused(tmp_path: Path) -> None:
    path = write_private(tmp_path / "rsa.key", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(KeyFileError, match="Ed25519 only"):
        Signer.from_file(path)


def test_encrypted_key_is_refused(tmp_path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    path = tmp_path / "enc.key"
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="encrypted"):
        Signer.from_file(path)


# ------------------------------------------------------------------ TrustStore


def test_rotation_directory_trusts_every_key(tmp_path: Path) -> None:
    old_key, old_pub = keygen(tmp_path / "old")
    new_key, new_pub = keygen(tmp_path / "new")
    trust_dir = tmp_path / "trusted"
    trust_dir.mkdir()
    (trust_dir / "2024.pub").write_bytes(old_pub.read_bytes())
    (trust_dir / "2025.pub").write_bytes(new_pub.read_bytes())
    (trust_dir / "README").write_text("ignored: not *.pub")
    trust = TrustStore.load(trust_dir)
    old, new = Signer.from_file(old_key), Signer.from_file(new_key)
    assert trust.key_ids == {old.key_id, new.key_id}
    assert len(trust) == 2
    for signer in (old, new):
        assert decode(encode(BATCH, signer), trust) == BATCH


def test_empty_trust_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"no \*\.pub files"):
        TrustStore.load(tmp_path)


def test_bad_pub_in_directory_names_the_file(tmp_path: Path) -> None:
    keygen(tmp_path)
    (tmp_path / "broken.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match=r"broken\.pub"):
        TrustStore.load(tmp_path)


def test_missing_trust_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        TrustStore.load(tmp_path / "gone.pub")


def test_rsa_public_key_is_refused(tmp_path: Path) -> None:
    pub = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    path = tmp_path / "rsa.pub"
    path.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="Ed25519 only"):
        TrustStore.load(path)


@posix_only
def test_private_key_as_trust_only_when_0600(tmp_path: Path) -> None:
    key_path, _ = keygen(tmp_path)
    signer = Signer.from_file(key_path)
    assert TrustStore.load(key_path).key_ids == {signer.key_id}
    key_path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        TrustStore.load(key_path)
    assert str(key_path) in str(info.value)


@posix_only
def test_exposed_private_key_found_in_trust_directory_is_refused(tmp_path: Path) -> None:
    write_private(tmp_path / "oops.pub", Ed25519PrivateKey.generate(), 0o644)
    with pytest.raises(KeyFileError, match=r"oops\.pub"):
        TrustStore.load(tmp_path)


def test_unknown_key_id_names_it_and_trusted_ids() -> None:
    a, b = Signer.from_seed(b"\x01" * 32), Signer.from_seed(b"\x02" * 32)
    trust = TrustStore.of(a)
    with pytest.raises(SignatureError) as info:
        decode(encode(BATCH, b), trust)
    assert str(info.value) == f"unknown key id {b.key_id}; trusted: {a.key_id}"
    with pytest.raises(SignatureError, match="trusted: none"):
        TrustStore().verify("abc", b"", bytes(64))


def test_verify_bad_signature() -> None:
    signer = Signer.from_seed(b"\x01" * 32)
    trust = TrustStore.of(signer.public_key)
    trust.verify(signer.key_id, b"data", signer.sign(b"data"))
    with pytest.raises(SignatureError, match="does not verify"):
        trust.verify(signer.key_id, b"datA", signer.sign(b"data"))


def test_add_returns_key_id_and_rejects_other_types() -> None:
    signer = Signer.from_seed(b"\x03" * 32)
    trust = TrustStore()
    assert trust.add(signer) == signer.key_id
    with pytest.raises(TypeError):
        trust.add("not a key")  # type: ignore[arg-type]
