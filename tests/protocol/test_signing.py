"""Ed25519 signing of manifests and policy orders: keys, ids, signatures, and every refusal by name."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lwd_protocol.announce import AnnouncementError, PolicyAnnouncement
from lwd_protocol.manifest import ActionSpec, ManifestError, Normalization, ObservationSpec, PolicyManifest, TensorSpec
from lwd_protocol.signing import (
    KeyFileError,
    SignatureError,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    load_trusted_keys,
    save_private_key,
    save_public_key,
    sign_announcement,
    sign_manifest,
    sign_payload,
    trusted_keys,
    verify_announcement,
    verify_manifest,
)

# RFC 8032, section 7.1, TEST 1 (empty message)
RFC_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC_SIGNATURE = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe2465"
    "5141438e7a100b"
)


def _manifest() -> PolicyManifest:
    sha = "ab" * 32
    return PolicyManifest(
        version=3,
        parent_version=2,
        created_at="2026-11-21T00:00:00Z",
        training_snapshot=7,
        model_file="policy.onnx",
        files={"policy.onnx": {"sha256": sha, "size": 10}},  # type: ignore[dict-item]
        inputs=[TensorSpec("state", [-1, 16]), TensorSpec("noise", [-1, 30, 16])],
        outputs=[TensorSpec("actions", [-1, 30, 16])],
        observation=ObservationSpec(),
        action=ActionSpec(),
        normalization=Normalization([0.0] * 16, [1.0] * 16, [0.0] * 16, [1.0] * 16),
    )


def _manifest_roundtrip() -> PolicyManifest:
    return PolicyManifest.from_json(_manifest().to_json())


def _order(**kw) -> PolicyAnnouncement:
    fields = dict(
        kind="publish",
        version=3,
        parent_version=2,
        manifest_sha256="cd" * 32,
        created_at="2026-11-21T10:00:00.000Z",
        issued_by="admin",
        target="fleet",
        seq=1795000000000,
    )
    fields.update(kw)
    return PolicyAnnouncement(**fields)


def test_rfc8032_vector_and_key_id_is_sha256_of_the_raw_public_key():
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC_SEED))
    assert key.public_key().public_bytes_raw().hex() == RFC_PUBLIC
    sig = sign_payload(b"", key)
    assert sig["alg"] == "ed25519"
    assert base64.b64decode(sig["value"]).hex() == RFC_SIGNATURE
    assert sig["key_id"] == key_id(key) == hashlib.sha256(bytes.fromhex(RFC_PUBLIC)).hexdigest()[:16]


def test_pem_and_raw_base64_key_files_load_to_the_same_keys(tmp_path):
    key = generate_private_key()
    save_private_key(tmp_path / "a.key", key)
    save_public_key(tmp_path / "a.pub", key)
    assert (tmp_path / "a.key").stat().st_mode & 0o077 == 0
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    (tmp_path / "b.key").write_text(base64.b64encode(seed).decode() + "\n")
    (tmp_path / "b.pub").write_text(base64.b64encode(key.public_key().public_bytes_raw()).decode())
    for priv in ("a.key", "b.key"):
        assert key_id(load_private_key(tmp_path / priv)) == key_id(key)
    for pub in ("a.pub", "b.pub"):
        assert load_public_key(tmp_path / pub).public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(FileExistsError):
        save_private_key(tmp_path / "a.key", key)  # never overwrites a key


@pytest.mark.parametrize(
    ("content", "loader", "needle"),
    [
        (b"not base64 !!", load_public_key, "neither PEM nor base64"),
        (base64.b64encode(b"x" * 31), load_public_key, "must be 32 bytes, got 31"),
        (b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n", load_public_key, "not a readable PEM"),
        (b"x" * 20000, load_private_key, "not a key"),
    ],
)
def test_bad_key_files_name_the_problem(tmp_path, content, loader, needle):
    (tmp_path / "k").write_bytes(content)
    with pytest.raises(KeyFileError, match=needle):
        loader(tmp_path / "k")


def test_wrong_key_types_are_refused(tmp_path):
    save_private_key(tmp_path / "ed.key", generate_private_key())
    with pytest.raises(KeyFileError, match="holds a private key"):
        load_public_key(tmp_path / "ed.key")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")
    with pytest.raises(KeyFileError, match="does not exist"):
        load_trusted_keys([tmp_path / "nope"])


def test_trusted_keys_from_directory_and_files(tmp_path):
    keys = [generate_private_key() for _ in range(3)]
    (tmp_path / "d").mkdir()
    save_public_key(tmp_path / "d" / "one.pub", keys[0])
    save_public_key(tmp_path / "d" / "two.pem", keys[1])
    (tmp_path / "d" / "README").write_text("ignored")
    save_public_key(tmp_path / "three.pub", keys[2])
    trusted = load_trusted_keys([tmp_path / "d", tmp_path / "three.pub"])
    assert sorted(trusted) == sorted(key_id(k) for k in keys)


def test_signed_manifest_verifies_independently_and_survives_json():
    key = generate_private_key()
    manifest = sign_manifest(_manifest_roundtrip(), key)
    again = PolicyManifest.from_json(manifest.to_json())
    assert verify_manifest(again, trusted_keys([key.public_key()])) == key_id(key)
    # independent check: canonical JSON of everything but the signature, verified with the raw public key
    doc = json.loads(manifest.to_json())
    del doc["signature"]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    raw_pub = Ed25519PublicKey.from_public_bytes(key.public_key().public_bytes_raw())
    raw_pub.verify(base64.b64decode(again.signature["value"]), canonical)  # raises if wrong


def test_manifest_refusals_name_why():
    key, other = generate_private_key(), generate_private_key()
    trusted = trusted_keys([key.public_key()])
    unsigned = _manifest_roundtrip()
    with pytest.raises(SignatureError, match="v3 refused: it is unsigned"):
        verify_manifest(unsigned, trusted)
    assert issubclass(SignatureError, ManifestError)
    with pytest.raises(SignatureError, match=f"unknown key id '{key_id(other)}'"):
        verify_manifest(sign_manifest(_manifest_roundtrip(), other), trusted)
    tampered = sign_manifest(_manifest_roundtrip(), key)
    tampered.reference_atol = 1.0
    with pytest.raises(SignatureError, match="does not verify"):
        verify_manifest(tampered, trusted)
    good = sign_manifest(_manifest_roundtrip(), key)
    cases = [
        ({**good.signature, "alg": "rsa"}, "algorithm 'rsa' is not 'ed25519'"),
        ({"alg": "ed25519", "key_id": key_id(key)}, "expected \\['alg', 'key_id', 'value'\\]"),
        ("deadbeef", "must be an object"),
        ({**good.signature, "value": "@@@"}, "not base64"),
        ({**good.signature, "value": base64.b64encode(b"x" * 10).decode()}, "10 bytes"),
        ({**good.signature, "value": 5}, "must be strings"),
    ]
    for sig, needle in cases:
        good.signature = sig
        with pytest.raises(SignatureError, match=needle):
            verify_manifest(good, trusted)
    with pytest.raises(SignatureError, match="no trusted public keys"):
        verify_manifest(sign_manifest(_manifest_roundtrip(), key), {})


def test_orders_are_signed_over_every_field():
    key = generate_private_key()
    trusted = trusted_keys([key.public_key()])
    order = sign_announcement(_order(), key)
    parsed = PolicyAnnouncement.from_json(order.to_json())
    assert verify_announcement(parsed, trusted) == key_id(key)
    for change in ({"target": "robot_01"}, {"seq": order.seq + 1}, {"kind": "rollback"}, {"version": 4}):
        forged = PolicyAnnouncement.from_json(json.dumps({**json.loads(order.to_json()), **change}))
        with pytest.raises(AnnouncementError, match=r"signature.*does not verify"):
            verify_announcement(forged, trusted)
    with pytest.raises(AnnouncementError, match="it is unsigned"):
        verify_announcement(_order(), trusted)
