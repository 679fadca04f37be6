"""Download one policy version from the store, refusing anything the signed order did not vouch for.

The manifest is fetched first and must hash to the announcement's ``manifest_sha256``; only the
files it lists are fetched, each capped at its recorded size (a store that serves more bytes is
cut off, not trusted), and the folder's sha256s are verified (``open_artifact``) before anyone uses it.
Errors are split into the two things a caller does differently: ``ArtifactRejectedError`` (this
version is bad; report and keep the current policy) and ``StoreUnavailableError`` (try again later).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lwd_protocol.manifest import MAX_MANIFEST_BYTES, ManifestError, PolicyManifest
from lwd_protocol.store import MANIFEST_NAME, policy_key

CHUNK = 1 << 20


class ArtifactRejectedError(Exception):
    """This artifact (or order) must not be used; the message is the reason robots report."""


class StoreUnavailableError(Exception):
    """The object store could not be reached or answered with a transient error: retry later."""


def _classify(exc: BaseException, key: str) -> Exception:
    from minio.error import S3Error

    if isinstance(exc, S3Error):
        if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
            return ArtifactRejectedError(f"{key} is not in the policy store")
        return StoreUnavailableError(f"store refused {key}: {exc.code}: {exc.message}")
    return StoreUnavailableError(f"store unreachable fetching {key}: {type(exc).__name__}: {exc}")


def fetch_object(s3: Any, bucket: str, key: str, limit: int, dest: Path | None = None) -> bytes | int:
    """GET `key` (at most `limit` bytes) into memory, or into `dest`; more bytes than that is a rejection."""
    try:
        response = s3.get_object(bucket, key)
    except Exception as exc:
        raise _classify(exc, key) from exc
    total = 0
    try:
        if dest is None:
            data = response.read(limit + 1)
            if len(data) > limit:
                raise ArtifactRejectedError(f"{key} is larger than the {limit} bytes expected")
            return data
        with open(dest, "wb") as fh:
            for chunk in response.stream(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise ArtifactRejectedError(f"{key} is larger than the {limit} bytes its manifest records")
                fh.write(chunk)
        return total
    except ArtifactRejectedError:
        raise
    except Exception as exc:
        raise _classify(exc, key) from exc
    finally:
        response.close()
        response.release_conn()


def fetch_manifest(s3: Any, bucket: str, version: int, expected_sha256: str) -> tuple[PolicyManifest, bytes]:
    """The manifest of `version`, checked against the order's sha256 and its own version field."""
    key = policy_key(version, MANIFEST_NAME)
    raw = fetch_object(s3, bucket, key, MAX_MANIFEST_BYTES)
    assert isinstance(raw, bytes)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise ArtifactRejectedError(
            f"{key} has sha256 {digest[:12]}…, the signed order says {expected_sha256[:12]}… (replaced or tampered)"
        )
    try:
        manifest = PolicyManifest.from_json(raw)
    except ManifestError as exc:
        raise ArtifactRejectedError(f"{key}: {exc}") from exc
    if manifest.version != version:
        raise ArtifactRejectedError(f"{key} describes version {manifest.version}, not {version}")
    return manifest, raw


def fetch_files(s3: Any, bucket: str, manifest: PolicyManifest, dest: Path, max_total_bytes: int) -> int:
    """Download every file the manifest lists into `dest`, each exactly its recorded size. Returns bytes.

    The sha256s are checked once, by ``open_artifact``, which every engine build goes through
    before the folder is installed: hashing here too cost every robot a second pass for nothing.
    """
    total = sum(e.size for e in manifest.files.values())
    if total > max_total_bytes:
        raise ArtifactRejectedError(
            f"v{manifest.version} is {total} bytes, over this robot's limit of {max_total_bytes}"
        )
    for name, entry in sorted(manifest.files.items()):
        key = policy_key(manifest.version, name)
        got = fetch_object(s3, bucket, key, entry.size, dest / name)
        if got != entry.size:
            raise ArtifactRejectedError(f"{key} is {got} bytes, its manifest records {entry.size}")
    return total
