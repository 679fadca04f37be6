"""Ed25519 signatures over policy manifests and policy announcements (library: ``cryptography``).

Why: a robot must only run a policy the fleet's admin (or learner) key vouched for, even if the
broker, the object store or a robot credential is compromised. The admin signs the canonical
bytes of a manifest (``PolicyManifest.signing_payload()``, which covers every file's sha256)
and of every announcement (publish or rollback order); robots carry only public keys.

Key files are either PEM (PKCS#8 private / SubjectPublicKeyInfo public, what ``cryptography``
and ``openssl genpkey -algorithm ed25519`` write) or one line of base64 of the raw 32-byte
key. A key's id is the first 16 hex digits of sha256(raw public key): it names which trusted key
to check a signature with, and never replaces the check itself.

The signature slot is ``{"alg": "ed25519", "key_id": <id>, "value": <base64 of 64 bytes>}``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lwd_protocol.announce import AnnouncementError, PolicyAnnouncement
from lwd_protocol.manifest import ManifestError, PolicyManifest

ALG = "ed25519"
KEY_ID_HEX = 16
SIGNATURE_FIELDS = ("alg", "key_id", "value")
MAX_KEY_FILE_BYTES = 16 * 1024
PUBLIC_KEY_SUFFIXES = (".pub", ".pem")

TrustedKeys = Mapping[str, Ed25519PublicKey]


class KeyFileError(ValueError):
    """A key file that cannot be read as an Ed25519 key; the message names the file and why."""


class SignatureError(ManifestError):
    """A manifest whose signature is missing, malformed, from an unknown key or invalid."""


# --- keys ------------------------------------------------------------------------------------
def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Short, stable id of a key pair: sha256 of the raw public key, first 16 hex digits."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(raw_public_bytes(public)).hexdigest()[:KEY_ID_HEX]


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def save_private_key(path: str | Path, key: Ed25519PrivateKey) -> Path:
    """Write PEM PKCS#8 with mode 0600 (created that way, never world-readable for an instant)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key))
    return path


def save_public_key(path: str | Path, key: Ed25519PublicKey | Ed25519PrivateKey) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(public_key_pem(key))
    return path


def _read_key_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"key file {path} is {size} bytes: not a key")
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc


def _raw_b64(data: bytes, path: Path, what: str) -> bytes:
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{path} is neither PEM nor base64 of a raw {what}: {exc}") from exc
    if len(raw) != 32:
        raise KeyFileError(f"{path}: raw Ed25519 {what} must be 32 bytes, got {len(raw)}")
    return raw


def load_private_key(path: str | Path, password: bytes | None = None) -> Ed25519PrivateKey:
    """PEM (PKCS#8, optionally encrypted) or base64 of the raw 32-byte seed."""
    path = Path(path)
    data = _read_key_file(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a readable PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_b64(data, path, "private key seed"))


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """PEM SubjectPublicKeyInfo or base64 of the raw 32-byte public key."""
    path = Path(path)
    data = _read_key_file(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in data:
            raise KeyFileError(f"{path} holds a private key: robots must only carry public keys")
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise KeyFileError(f"{path} is not a readable PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_b64(data, path, "public key"))


def trusted_keys(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}


def load_trusted_keys(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys from files and/or directories (every *.pub / *.pem inside), indexed by key id."""
    keys: list[Ed25519PublicKey] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in PUBLIC_KEY_SUFFIXES and f.is_file())
            keys.extend(load_public_key(f) for f in files)
        elif p.is_file():
            keys.append(load_public_key(p))
        else:
            raise KeyFileError(f"trusted key path {p} does not exist")
    return trusted_keys(keys)


# --- raw signatures ----------------------------------------------------------------------------
def sign_payload(payload: bytes, private_key: Ed25519PrivateKey) -> dict[str, str]:
    """The signature slot for `payload`."""
    value = base64.b64encode(private_key.sign(payload)).decode("ascii")
    return {"alg": ALG, "key_id": key_id(private_key), "value": value}


def signature_problem(payload: bytes, signature: Any, trusted: TrustedKeys) -> str | None:
    """None if `signature` is a valid slot over `payload` by a trusted key, else why not."""
    if signature is None:
        return "it is unsigned"
    if not isinstance(signature, Mapping):
        return f"its signature must be an object {{alg, key_id, value}}, got {type(signature).__name__}"
    fields = set(signature)
    if fields != set(SIGNATURE_FIELDS):
        return f"its signature has fields {sorted(fields)}, expected {list(SIGNATURE_FIELDS)}"
    alg, kid, value = (signature[f] for f in SIGNATURE_FIELDS)
    if not all(isinstance(v, str) for v in (alg, kid, value)):
        return "its signature fields must be strings"
    if alg != ALG:
        return f"its signature algorithm {alg!r} is not {ALG!r}"
    if not trusted:
        return "no trusted public keys are configured"
    key = trusted.get(kid)
    if key is None:
        return f"it is signed by unknown key id {kid!r} (trusted: {sorted(trusted)})"
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "its signature value is not base64"
    if len(raw) != 64:
        return f"its signature value is {len(raw)} bytes, an Ed25519 signature is 64"
    try:
        key.verify(raw, payload)
    except InvalidSignature:
        return f"its signature does not verify with key {kid!r} (content changed after signing, or forged)"
    return None


# --- manifests -----------------------------------------------------------------------------------
def sign_manifest(manifest: PolicyManifest, private_key: Ed25519PrivateKey) -> PolicyManifest:
    """Fill manifest.signature (replacing any previous one) and return the same manifest."""
    manifest.validate()
    manifest.signature = sign_payload(manifest.signing_payload(), private_key)
    return manifest


def verify_manifest(manifest: PolicyManifest, trusted_public_keys: TrustedKeys) -> str:
    """Raise SignatureError naming why the manifest is not signed by a trusted key; return the key id."""
    problem = signature_problem(manifest.signing_payload(), manifest.signature, trusted_public_keys)
    if problem is not None:
        raise SignatureError(f"policy manifest v{manifest.version} refused: {problem}")
    return str(manifest.signature["key_id"])  # type: ignore[index]


# --- announcements -------------------------------------------------------------------------------
def sign_announcement(announcement: PolicyAnnouncement, private_key: Ed25519PrivateKey) -> PolicyAnnouncement:
    """A copy of the announcement with its signature slot filled."""
    return dataclasses.replace(announcement, signature=sign_payload(announcement.signing_payload(), private_key))


def verify_announcement(announcement: PolicyAnnouncement, trusted_public_keys: TrustedKeys) -> str:
    """Raise AnnouncementError(field='signature') naming why; return the signing key id."""
    problem = signature_problem(announcement.signing_payload(), announcement.signature, trusted_public_keys)
    if problem is not None:
        raise AnnouncementError(
            "signature", f"{announcement.kind} order for v{announcement.version} refused: {problem}"
        )
    return str(announcement.signature["key_id"])  # type: ignore[index]
