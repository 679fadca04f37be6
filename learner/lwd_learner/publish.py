"""Policy publication: put an artifact folder into the policies bucket, then announce it (retained).

Order matters, because robots act on what they see: every artifact file is uploaded first and
the manifest last, and only then is the signed PolicyAnnouncement retained on the fleet topic
(or on one robot's pin topic). A robot that sees an announcement therefore always finds a
complete artifact; a crash mid-upload leaves a folder without a manifest that nobody announces.

Versions are immutable: a version whose manifest already exists is never overwritten with
different bytes. The check is a read-compare before the upload plus a conditional write of the
manifest (``If-None-Match: *``), so two publishers racing on one version cannot both win.
Re-publishing the identical artifact is a no-op upload followed by a fresh announcement.

A rollback is an order, not an upload: a signed "rollback" announcement naming an older version
already in the bucket. Robots accept a lower version only through such an order.
Every order carries ``seq`` = max(now in ms, highest seq retained on the policy topics + 1), so
it is strictly newer than every order robots accepted before, even across publisher machines
whose clocks disagree. The retained orders come from a standing subscription (``RetainedReader``):
the first read waits for the broker's retained burst, later announces read the live view at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lwd_learner.retained_view import RetainedReader, RetainedReadError
from lwd_protocol.announce import (
    FLEET_TARGET,
    AnnouncementError,
    PolicyAnnouncement,
    RobotPolicyStatus,
    utc_timestamp,
)
from lwd_protocol.manifest import MAX_MANIFEST_BYTES, ManifestError, PolicyManifest
from lwd_protocol.names import MqttTopics, validate_robot_id
from lwd_protocol.policy_io import check_io_contract
from lwd_protocol.signing import key_id, sign_announcement, sign_manifest
from lwd_protocol.store import MANIFEST_NAME, POLICIES_BUCKET, policy_key, policy_prefix
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, connect_mqtt, make_mqtt_client, make_s3_client, stop_mqtt

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Publication refused or failed; the message says what to do about it."""


@dataclass(frozen=True)
class PublisherConfig:
    s3: S3Endpoint
    mqtt: MqttEndpoint | None  # None: store-only operations (upload, list)
    issued_by: str  # identity recorded in every order (audit trail)
    bucket: str = POLICIES_BUCKET
    puback_timeout_s: float = 10.0
    retained_quiet_s: float = 0.3  # retained messages arrive right after SUBACK; stop after this much silence
    retained_max_s: float = 3.0


@dataclass(frozen=True)
class UploadResult:
    version: int
    manifest_sha256: str
    manifest: PolicyManifest
    uploaded: tuple[str, ...]  # object names written ( empty when the identical version was already there)

    @property
    def already_present(self) -> bool:
        return not self.uploaded


@dataclass(frozen=True)
class VersionInfo:
    """One version folder in the bucket, as `lwd admin list` shows it."""

    version: int
    complete: bool  # manifest present (uploads finish with it)
    created_at: str = ""
    parent_version: int = 0
    training_snapshot: int = 0
    key_id: str = ""  # signer, "" = unsigned
    evaluation: dict[str, Any] | None = None  # manifest notes {"eval": {...}} when the exporter wrote one
    notes: str = ""
    size_bytes: int = 0
    problem: str = ""  # why the manifest could not be read


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def evaluation_from_notes(notes: str) -> dict[str, Any] | None:
    """Manifest notes may be a JSON object with an "eval" entry (success rate, episodes, ...)."""
    try:
        data = json.loads(notes)
    except (json.JSONDecodeError, TypeError):
        return None
    evaluation = data.get("eval") if isinstance(data, dict) else None
    return evaluation if isinstance(evaluation, dict) else None


class PolicyPublisher:
    """Uploads artifacts and issues signed orders. Use as a context manager (closes MQTT)."""

    def __init__(self, config: PublisherConfig, signing_key: Ed25519PrivateKey | None):
        self.config = config
        self.signing_key = signing_key
        self._s3 = make_s3_client(config.s3)
        self._mqtt = None
        self._reader: RetainedReader | None = None  # on self._mqtt; the policy topics stay subscribed

    def __enter__(self) -> PolicyPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._mqtt is not None:
            stop_mqtt(self._mqtt)
            self._mqtt = None
            self._reader = None

    # --- store ---------------------------------------------------------------------------------
    def upload(self, folder: str | Path, sign: bool = True) -> UploadResult:
        """Verify the folder against its manifest, sign it (if a key is set), upload files then manifest."""
        folder = Path(folder)
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise PublishError(f"{folder} has no {MANIFEST_NAME}: not a policy artifact folder")
        raw = manifest_path.read_bytes()
        manifest = PolicyManifest.from_json(raw)
        check_io_contract(manifest)
        manifest.verify_files(folder)
        if sign and self.signing_key is not None:
            body = sign_manifest(manifest, self.signing_key).to_json().encode()
        elif manifest.signature is None and sign:
            raise PublishError(f"{folder} is unsigned and no signing key was given: robots refuse unsigned policies")
        else:
            body = raw
        digest = sha256_bytes(body)
        version = manifest.version
        existing = self._get_optional(policy_key(version, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        if existing is not None:
            if sha256_bytes(existing) == digest:
                log.info("v%06d already in %s with the same manifest: nothing to upload", version, self.config.bucket)
                return UploadResult(version, digest, manifest, ())
            raise PublishError(self._immutable_message(version, existing))
        written = []
        for name, entry in sorted(manifest.files.items()):
            key = policy_key(version, name)
            self._s3.fput_object(self.config.bucket, key, str(folder / name), metadata={"sha256": entry.sha256})
            written.append(key)
        manifest_key = policy_key(version, MANIFEST_NAME)
        if not self._put_if_absent(manifest_key, body):
            existing = self._get_optional(manifest_key, MAX_MANIFEST_BYTES) or b""
            if sha256_bytes(existing) != digest:
                raise PublishError(self._immutable_message(version, existing))
        written.append(manifest_key)
        log.info("uploaded v%06d (%d files) to %s", version, len(written), self.config.bucket)
        return UploadResult(version, digest, manifest, tuple(written))

    def _immutable_message(self, version: int, existing: bytes) -> str:
        return (
            f"v{version:06d} already exists in {self.config.bucket} with a different manifest "
            f"(sha256 {sha256_bytes(existing)[:12]}…): versions are immutable; "
            f"export this policy as v{self.next_free_version():06d} instead"
        )

    def _put_if_absent(self, key: str, body: bytes) -> bool:
        """PUT with If-None-Match: * (the minio SDK's public put_object cannot send it). False if it existed."""
        from minio.error import S3Error

        try:
            self._s3._put_object(
                self.config.bucket,
                key,
                body,
                headers={"If-None-Match": "*", "Content-Type": "application/json"},
            )
        except S3Error as exc:
            if exc.code == "PreconditionFailed" or exc.response.status == 412:
                return False
            raise
        return True

    def _get_optional(self, key: str, limit: int) -> bytes | None:
        from minio.error import S3Error

        try:
            response = self._s3.get_object(self.config.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise
        try:
            data = response.read(limit + 1)
        finally:
            response.close()
            response.release_conn()
        if len(data) > limit:
            raise PublishError(f"{self.config.bucket}/{key} is larger than {limit} bytes")
        return data

    def read_manifest(self, version: int) -> tuple[PolicyManifest, str]:
        """The stored manifest of `version` and the sha256 of its bytes; PublishError if absent."""
        raw = self._get_optional(policy_key(version, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        if raw is None:
            raise PublishError(f"v{version:06d} is not in {self.config.bucket} (or its upload never finished)")
        return PolicyManifest.from_json(raw), sha256_bytes(raw)

    def _sizes_by_version(self) -> dict[int, int]:
        """Bytes stored per version folder; folders without objects (left by deletes on some stores) are skipped."""
        sizes: dict[int, int] = {}
        for obj in self._s3.list_objects(self.config.bucket, prefix="v", recursive=True):
            folder, _, name = obj.object_name.partition("/")
            if name and len(folder) == 7 and folder[1:].isdigit() and int(folder[1:]) >= 1:
                sizes[int(folder[1:])] = sizes.get(int(folder[1:]), 0) + (obj.size or 0)
        return sizes

    def stored_versions(self) -> list[int]:
        return sorted(self._sizes_by_version())

    def next_free_version(self) -> int:
        versions = self.stored_versions()
        return (versions[-1] + 1) if versions else 1

    def list_versions(self) -> list[VersionInfo]:
        infos = []
        for version, size in sorted(self._sizes_by_version().items()):
            prefix = policy_prefix(version)
            try:
                raw = self._get_optional(prefix + MANIFEST_NAME, MAX_MANIFEST_BYTES)
                if raw is None:
                    infos.append(
                        VersionInfo(version, False, size_bytes=size, problem="no manifest (incomplete upload)")
                    )
                    continue
                m = PolicyManifest.from_json(raw)
            except (ManifestError, PublishError) as exc:
                infos.append(VersionInfo(version, True, size_bytes=size, problem=str(exc)))
                continue
            infos.append(
                VersionInfo(
                    version=version,
                    complete=True,
                    created_at=m.created_at,
                    parent_version=m.parent_version,
                    training_snapshot=m.training_snapshot,
                    key_id=str((m.signature or {}).get("key_id", "")),
                    evaluation=evaluation_from_notes(m.notes),
                    notes=m.notes,
                    size_bytes=size,
                )
            )
        return infos

    # --- orders ----------------------------------------------------------------------------------
    def _client(self):
        if self.config.mqtt is None:
            raise PublishError("no MQTT endpoint configured: cannot announce")
        if self._mqtt is None:
            self._mqtt = connect_mqtt(make_mqtt_client(self.config.mqtt), self.config.mqtt)
        return self._mqtt

    def _retained_reader(self) -> RetainedReader:
        client = self._client()
        if self._reader is None:
            self._reader = RetainedReader(
                client, MqttTopics.QOS, self.config.retained_quiet_s, self.config.retained_max_s
            )
        return self._reader

    def retained(self, topic_filter: str, keep: bool = False) -> dict[str, bytes]:
        """Retained payloads under a topic filter (topic -> payload), collected until quiet.

        keep=True leaves a standing subscription so later reads of that filter are immediate.
        """
        try:
            return self._retained_reader().read(topic_filter, keep=keep)
        except RetainedReadError as exc:
            raise PublishError(str(exc)) from exc

    def prepare(self) -> None:
        """Connect and start the standing view of the policy topics now, so no later announce waits on it."""
        if self.config.mqtt is not None:
            self.current_orders()

    def current_orders(self) -> dict[str, PolicyAnnouncement]:
        """Retained orders on every policy topic that parse (target -> order)."""
        orders: dict[str, PolicyAnnouncement] = {}
        for topic, payload in self.retained(MqttTopics.all_policy(), keep=True).items():
            try:
                ann = PolicyAnnouncement.from_json(payload)
            except AnnouncementError as exc:
                log.warning("ignoring unreadable retained order on %s: %s", topic, exc)
                continue
            orders[ann.target] = ann
        return orders

    def robot_statuses(self) -> dict[str, RobotPolicyStatus | str]:
        """Retained robot status reports (robot id -> status, or the parse error text)."""
        statuses: dict[str, RobotPolicyStatus | str] = {}
        for topic, payload in self.retained(MqttTopics.all_status(), keep=True).items():
            try:
                robot = MqttTopics.robot_id_from_topic(topic)
            except ValueError:
                continue
            try:
                statuses[robot] = RobotPolicyStatus.from_json(payload)
            except AnnouncementError as exc:
                statuses[robot] = f"unreadable status: {exc}"
        return statuses

    def _next_seq(self, orders: dict[str, PolicyAnnouncement]) -> int:
        highest = max((o.seq for o in orders.values()), default=0)
        return max(time.time_ns() // 1_000_000, highest + 1)

    def announce(
        self, kind: str, manifest: PolicyManifest, manifest_sha256: str, robot: str | None = None, note: str = ""
    ) -> PolicyAnnouncement:
        """Sign and retain one order on the fleet topic (robot=None) or on the robot's pin topic."""
        if self.signing_key is None:
            raise PublishError("orders must be signed: no signing key given")
        target = FLEET_TARGET if robot is None else validate_robot_id(robot)
        orders = self.current_orders()
        current = orders.get(target) or (orders.get(FLEET_TARGET) if robot is not None else None)
        if kind == "publish" and current is not None and manifest.version < current.version:
            raise PublishError(
                f"v{manifest.version} is older than v{current.version} that {target} was last told to run: "
                "robots refuse that as a version rollback; issue `lwd admin rollback` instead"
            )
        ann = sign_announcement(
            PolicyAnnouncement(
                kind=kind,
                version=manifest.version,
                parent_version=manifest.parent_version,
                manifest_sha256=manifest_sha256,
                created_at=utc_timestamp(),
                issued_by=self.config.issued_by,
                target=target,
                seq=self._next_seq(orders),
                note=note,
            ),
            self.signing_key,
        )
        self._retain(ann.topic(), ann.to_json())
        log.info("%s order v%06d -> %s (seq %d, key %s)", kind, ann.version, target, ann.seq, key_id(self.signing_key))
        return ann

    def _retain(self, topic: str, payload: bytes) -> None:
        info = self._client().publish(topic, payload, qos=MqttTopics.QOS, retain=True)
        info.wait_for_publish(self.config.puback_timeout_s)
        if not info.is_published():
            raise PublishError(
                f"broker did not acknowledge the order on {topic} within {self.config.puback_timeout_s} s"
            )
        if self._reader is not None:
            self._reader.note_published(topic, payload)

    def publish(self, folder: str | Path, robot: str | None = None, note: str = "") -> PolicyAnnouncement:
        """Upload (idempotent) then announce fleet-wide, or pin one robot when `robot` is given."""
        result = self.upload(folder)
        return self.announce("publish", result.manifest, result.manifest_sha256, robot=robot, note=note)

    def rollback(self, version: int, robot: str | None = None, note: str = "") -> PolicyAnnouncement:
        """Order the fleet (or one robot) back to a version already in the bucket."""
        manifest, digest = self.read_manifest(version)
        if manifest.signature is None:
            raise PublishError(f"v{version:06d} is unsigned: robots would refuse it")
        return self.announce("rollback", manifest, digest, robot=robot, note=note)

    def unpin(self, robot: str) -> None:
        """Clear a robot's retained pin so it follows the fleet order again (authorised by the broker ACL)."""
        self._retain(MqttTopics.policy_robot(validate_robot_id(robot)), b"")
