"""Ed25519 signing keys, the set of trusted public keys, and ``keygen``.

A key id is derived from the public key (never chosen), so a publisher cannot claim
another's id by mistake and several trusted keys can coexist during a rotation.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridge.envelope.scope import ANY_SCOPE, Scope, split_pub
from bridge.errors import KeyFileError, RouteRefusedError, SignatureError

KEY_FILE = "bridge.key"
PUB_FILE = "bridge.pub"
KEY_ID_LENGTH = 16

StrPath: TypeAlias = "str | os.PathLike[str]"
Buffer: TypeAlias = "bytes | bytearray | memoryview"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


class Signer:
    """An Ed25519 private key that signs envelopes."""

    __slots__ = ("_private", "key_id", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    def __repr__(self) -> str:  # never show key material
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: StrPath) -> Signer:
        """Load a PEM PKCS#8 Ed25519 private key that only its owner can read."""
        path = Path(path)
        data, st = _read(path, "signing key")
        _refuse_if_exposed(path, st)
        return cls(_private_key(data, path))

    @classmethod
    def from_pem(cls, data: bytes, where: str) -> Signer:
        """From PEM text held elsewhere than a file (an SSM SecureString); ``where`` names it in errors."""
        return cls(_private_key(data, Path(where)))

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """From the 32-byte raw private key (test vectors); ``ValueError`` if not 32 bytes."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: Buffer) -> bytes:
        return self._private.sign(data)

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


class TrustStore:
    """The public keys whose envelopes a consumer accepts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey | Signer] = (), accept: Scope = ANY_SCOPE) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._scopes: dict[str, Scope] = {}
        self.accept = accept  # the applier's own: what it writes, whoever signed
        for key in keys:
            self.add(key)

    def __repr__(self) -> str:
        return f"TrustStore(key_ids={sorted(self._keys)})"

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def of(cls, *public_keys: Ed25519PublicKey | Signer) -> TrustStore:
        return cls(public_keys)

    @classmethod
    def load(cls, path: StrPath, accept: Scope = ANY_SCOPE) -> TrustStore:
        """A ``.pub`` file, or a directory whose ``*.pub`` files are all trusted (rotation)."""
        path = Path(path)
        if path.is_dir():
            refuse_if_writable_by_others(path, path.stat(), "trust directory")
            files = sorted(p for p in path.glob("*.pub") if p.is_file())
            if not files:
                raise KeyFileError(f"trust directory {path} holds no *.pub files")
        else:
            files = [path]
        store = cls(accept=accept)
        for file in files:
            key, scope = _trusted_key(file)
            store.add(key, scope)
        return store

    def add_pem(self, data: bytes, where: str) -> str:
        """Trust the public key in ``data`` (a ``.pub`` file's text, ``# allow-`` lines included),
        held elsewhere than a file (an SSM parameter); ``where`` names it in errors."""
        pem, scope = split_pub(data, Path(where))
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"trusted key {where} is not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"trusted key {where} is a {_kind(key)} key; ddb-bridge verifies Ed25519 only")
        return self.add(key, scope)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def add(self, key: Ed25519PublicKey | Signer, scope: Scope = ANY_SCOPE) -> str:
        """Trust one more key, for what ``scope`` allows; returns its key id."""
        if isinstance(key, Signer):
            key = key.public_key
        if not isinstance(key, Ed25519PublicKey):
            raise TypeError(f"expected an Ed25519 public key or a Signer, got {type(key).__name__}")
        kid = key_id_of(key)
        self._keys[kid] = key
        self._scopes[kid] = scope
        return kid

    def authorize(self, key_id: str, table: str, origin: str) -> None:
        """Raise :class:`RouteRefusedError` unless key ``key_id`` and this applier may carry this batch.

        Call only after :meth:`verify`: ``table`` and ``origin`` are the signed ones.
        """
        why = self._scopes.get(key_id, Scope(frozenset(), frozenset())).refusal(table, origin)
        if why is not None:
            raise RouteRefusedError(f"key {key_id} may not write here: {why} (its trust entry's allow- lines)")
        why = self.accept.refusal(table, origin)
        if why is not None:
            raise RouteRefusedError(
                f"envelope signed by key {key_id}, not accepted by this applier: {why} (accept_tables / accept_origins)"
            )

    def verify(self, key_id: str, data: Buffer, signature: Buffer) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is ``key_id``'s over ``data``."""
        key = self._keys.get(key_id)
        if key is None:
            trusted = ", ".join(sorted(self._keys)) or "none"
            raise SignatureError(f"unknown key id {key_id}; trusted: {trusted}")
        try:
            key.verify(bytes(signature), data)
        except InvalidSignature:
            raise SignatureError(f"signature does not verify with key {key_id}") from None


def keygen(out_dir: StrPath) -> tuple[Path, Path]:
    """Write a new ``bridge.key`` (0600) and ``bridge.pub`` into ``out_dir``."""
    out = Path(out_dir)
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    signer = Signer(Ed25519PrivateKey.generate())
    try:
        out.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never overwrite a key; mode at creation: never briefly readable by others.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{key_path} already exists; refusing to overwrite a signing key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {key_path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(signer._private_pem())
        pub_path.write_bytes(signer.public_pem())
    except OSError as exc:
        key_path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write keys into {out}: {exc.strerror or exc}") from exc
    return key_path, pub_path


def _read(path: Path, what: str) -> tuple[bytes, os.stat_result]:
    """File contents and status, both from one open file (no check-then-open race)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"{what} {path} is not a regular file")
            return fh.read(), st
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _refuse_if_exposed(path: Path, st: os.stat_result) -> None:
    if os.name != "posix":
        return
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"private key {path} has mode {stat.S_IMODE(st.st_mode):04o}, accessible by group or others; "
            f"run `chmod 600 {path}`"
        )
    # Like ssh: a key someone else owns may have been planted, or read by its owner at will.
    if st.st_uid != os.geteuid():
        raise KeyFileError(
            f"private key {path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); "
            f"run `chown {os.geteuid()} {path}`"
        )


def refuse_if_writable_by_others(path: Path, st: os.stat_result, what: str) -> None:
    """ssh's StrictModes for what decides trust: whoever can write it can add a trusted key."""
    if os.name != "posix":
        return
    if st.st_mode & 0o022:
        raise KeyFileError(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}, writable by group or others, who could "
            f"add a trusted key; run `chmod go-w {path}`"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise KeyFileError(
            f"{what} {path} is owned by uid {st.st_uid}, neither this user (uid {os.geteuid()}) nor root, "
            f"who could add a trusted key; run `chown {os.geteuid()} {path}`"
        )


def _kind(key: object) -> str:
    return type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "") or "unknown"


def _private_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's way of saying "needs a password"
        raise KeyFileError(f"private key {path} is encrypted; ddb-bridge needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not a PEM PKCS#8 private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {_kind(key)} key; ddb-bridge signs with Ed25519 only")
    return key


def _trusted_key(path: Path) -> tuple[Ed25519PublicKey, Scope]:
    data, st = _read(path, "trusted key")
    if b"PRIVATE KEY-----" in data:
        # Pointing trust at the signing key is convenient for one-region tests, but it
        # must not turn a sloppy private key file into an accepted one.
        _refuse_if_exposed(path, st)
        return _private_key(data, path).public_key(), ANY_SCOPE
    refuse_if_writable_by_others(path, st, "trusted key")
    data, scope = split_pub(data, path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"trusted key {path} is not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"trusted key {path} is a {_kind(key)} key; ddb-bridge verifies Ed25519 only")
    return key, scope
