"""The cloud side of the flywheel on 127.0.0.1: broker, object store, Coordinator, identities, keys.

One identity per party, least privilege (lwd_learner.localstack): each robot its own MQTT user and
S3 key (own episode prefix only), the Coordinator, the learner, and the admin who signs policies.
Secrets go to files readable only by this user, the way the robot nodes read them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from lwd_learner.coordinator import Coordinator, CoordinatorConfig
from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
from lwd_protocol.signing import generate_private_key, save_private_key, save_public_key
from lwd_protocol.transport import MqttEndpoint


@dataclass
class RobotCredentials:
    robot_id: str
    mqtt_password_file: Path
    s3_access_key: str
    s3_secret_key_file: Path


@dataclass
class CloudStack:
    workdir: Path
    robot_ids: list[str]
    broker: MosquittoBroker | None = None
    store: SeaweedS3 | None = None
    coordinator: Coordinator | None = None
    credentials: dict[str, RobotCredentials] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.secrets_dir = self.workdir / "secrets"
        self.admin_key_file = self.secrets_dir / "admin_ed25519.pem"
        self.trusted_keys_file = self.workdir / "trusted_keys" / "admin.pub"
        self.coordinator_db = self.workdir / "coordinator" / "snapshots.sqlite"

    def start(self) -> CloudStack:
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        mqtt_ids = [
            MqttIdentity.generate("coordinator", "coordinator"),
            MqttIdentity.generate("learner", "learner"),
            MqttIdentity.generate("admin", "admin"),
            MqttIdentity.generate("monitor", "monitor"),
            *(MqttIdentity.generate(r, "robot") for r in self.robot_ids),
        ]
        s3_ids = [S3Identity.admin(), S3Identity.coordinator(), S3Identity.learner()]
        s3_ids += [S3Identity.robot(r) for r in self.robot_ids]
        self.broker = MosquittoBroker(self.workdir / "mosquitto", mqtt_ids).start()
        self.store = SeaweedS3(self.workdir / "seaweedfs", s3_ids).start()
        key = generate_private_key()
        save_private_key(self.admin_key_file, key)
        self.trusted_keys_file.parent.mkdir(parents=True, exist_ok=True)
        save_public_key(self.trusted_keys_file, key)
        for robot in self.robot_ids:
            self.credentials[robot] = self._write_robot_secrets(robot)
        self.coordinator = Coordinator(
            CoordinatorConfig(
                mqtt=self.mqtt("coordinator", client_id="lwd-coordinator", persistent=True),
                s3=self.store.s3_endpoint("coordinator"),
                db_path=self.coordinator_db,
                batch_interval_s=1.0,
            )
        ).start()
        return self

    def _write_robot_secrets(self, robot: str) -> RobotCredentials:
        folder = self.secrets_dir / robot
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident, s3 = self.broker.identity(robot), self.store.identity(robot)
        pw, sk = folder / "mqtt_password", folder / "s3_secret_key"
        for path, text in ((pw, ident.password), (sk, s3.secret_key)):
            path.write_text(text)
            path.chmod(0o600)
        return RobotCredentials(robot, pw, s3.access_key, sk)

    def mqtt(self, user: str, client_id: str = "", persistent: bool = False) -> MqttEndpoint:
        cid = client_id or f"{user}-{secrets.token_hex(4)}"
        return self.broker.endpoint(user, client_id=cid, clean_session=not persistent)

    def stop(self) -> None:
        """Stop in reverse order; each part is stopped even if an earlier stop fails."""
        errors = []
        for part in (self.coordinator, self.store, self.broker):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
