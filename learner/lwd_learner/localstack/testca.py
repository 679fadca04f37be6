"""A throw-away certificate authority for TLS on loopback (tests and the local stack only).

Made with the `openssl` CLI (in every Debian base image) so the dev stack needs no extra Python
package: a CA, a server certificate for 127.0.0.1/localhost signed by it, and on request client
certificates for mutual TLS. Production uses the operator's real PKI with the same settings.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    cert_file: str
    key_file: str


class TestCA:
    """Creates `ca.pem` and issues leaf certificates into `workdir`."""

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path, days: int = 2) -> None:
        self.openssl = shutil.which("openssl")
        if self.openssl is None:
            raise FileNotFoundError("openssl not found: `apt-get install openssl` (make setup does)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.days = days
        self.ca = CertPair(str(self.workdir / "ca.pem"), str(self.workdir / "ca.key"))
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", self.ca.key_file, "-out", self.ca.cert_file, "-days", str(days),
            "-subj", "/CN=LWD Fleet test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    @property
    def ca_file(self) -> str:
        return self.ca.cert_file

    def _run(self, *args: str) -> None:
        proc = subprocess.run([self.openssl, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()[-400:]}")

    def issue(self, name: str, server: bool = True) -> CertPair:
        """A leaf certificate for 127.0.0.1 + localhost (server) or a client certificate named `name`."""
        pair = CertPair(str(self.workdir / f"{name}.pem"), str(self.workdir / f"{name}.key"))
        csr = self.workdir / f"{name}.csr"
        ext = self.workdir / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature", f"extendedKeyUsage={usage}"]
        if server:
            lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
        ext.write_text("\n".join(lines) + "\n")
        self._run(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", pair.key_file, "-out", str(csr), "-subj", f"/CN={name}",
        )  # fmt: skip
        self._run(
            "x509", "-req", "-in", str(csr), "-CA", self.ca.cert_file, "-CAkey", self.ca.key_file,
            "-CAcreateserial", "-out", pair.cert_file, "-days", str(self.days), "-extfile", str(ext),
        )  # fmt: skip
        Path(pair.key_file).chmod(0o600)
        return pair


@dataclass(frozen=True)
class ServerTls:
    """What a local server needs to listen with TLS: its certificate and the CA clients are checked against."""

    cert_file: str
    key_file: str
    ca_file: str
    require_client_cert: bool = False

    @classmethod
    def from_ca(cls, ca: TestCA, name: str = "server", require_client_cert: bool = False) -> ServerTls:
        pair = ca.issue(name, server=True)
        return cls(pair.cert_file, pair.key_file, ca.ca_file, require_client_cert)
